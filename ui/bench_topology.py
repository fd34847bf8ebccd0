"""`vigil bench topology`: build a large cluster's graph and time what diagnosis asks of it."""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from vigil.topology import queries
from vigil.topology.graph import Topology
from vigil.topology.synthetic import NODES_PER_JOB, build_cluster

Progress = Callable[[str], None]


def run(gpus: int, samples: int, seed: int,
        progress: Progress = lambda _: None) -> dict[str, float | int]:
    """Figures for a `gpus`-GPU cluster: sizes, build, memory, snapshot, query latencies."""
    rng = np.random.default_rng(seed)
    progress(f"building a {gpus:,}-GPU cluster")
    t0 = time.perf_counter()
    cluster = build_cluster(gpus)
    build_s = time.perf_counter() - t0
    topo = cluster.topology
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures: dict[str, float | int] = {
        "gpus": gpus, "nodes": len(cluster.nodes), "entities": len(topo),
        "relations": topo.relation_count(), "build_s": round(build_s, 2),
        "peak_rss_mb": round(rss_mb),
    }
    with tempfile.TemporaryDirectory(prefix="vigil-topo-") as tmp:
        path = Path(tmp) / "topology.snapshot"
        progress("saving and loading a snapshot")
        t0 = time.perf_counter()
        topo.save(path)
        figures["snapshot_save_s"] = round(time.perf_counter() - t0, 2)
        figures["snapshot_mb"] = round(path.stat().st_size / 1e6, 1)
        t0 = time.perf_counter()
        Topology.load(path)
        figures["snapshot_load_s"] = round(time.perf_counter() - t0, 2)
    def pick(items: list[str]) -> str:
        return items[int(rng.integers(len(items)))]

    def host(node: str) -> str:
        return node.removeprefix("node:")

    def some_nodes() -> list[str]:
        start = int(rng.integers(max(1, len(cluster.nodes) - 32)))
        return cluster.nodes[start:start + 8]

    def far_gpus() -> tuple[str, str]:
        return (f"gpu:{host(pick(cluster.nodes))}/{int(rng.integers(8))}",
                f"gpu:{host(pick(cluster.nodes))}/{int(rng.integers(8))}")

    def a_rank() -> str:
        i = int(rng.integers(len(cluster.nodes)))  # a node, then one of its 8 ranks
        job, slot = divmod(i, NODES_PER_JOB)
        return f"rank:train-{job:03d}/{slot * 8 + int(rng.integers(8))}"

    cases: dict[str, Callable[[], object]] = {
        "lookup_host": lambda: topo.index("host.name", host(pick(cluster.nodes))),
        "blast_radius_leaf": lambda: queries.blast_radius(topo, pick(cluster.leaves)),
        "blast_radius_gpu": lambda: queries.blast_radius(
            topo, f"gpu:{host(pick(cluster.nodes))}/{int(rng.integers(8))}"),
        "shared_dependencies_8_nodes": lambda: queries.shared_dependencies(topo, some_nodes()),
        "path_gpu_gpu": lambda: queries.path(topo, *far_gpus()),
        "job_placement": lambda: queries.job_placement(topo, pick(cluster.jobs)),
        "peers_rank": lambda: queries.peers(topo, a_rank()),
    }
    for name, case in cases.items():
        progress(f"timing {name}")
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            case()
            times.append((time.perf_counter() - t0) * 1000)
        figures[f"{name}_p50_ms"] = round(float(np.percentile(times, 50)), 3)
        figures[f"{name}_p99_ms"] = round(float(np.percentile(times, 99)), 3)
    return figures
