"""What simulating a cluster costs: CPU seconds per step, per node, with every endpoint rendered."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vigil.diagnosis.library import load_library
from vigil.sim.cluster import SimCluster
from vigil.sim.topology import ClusterSpec


@dataclass(frozen=True, slots=True)
class SimCost:
    nodes: int
    gpus: int
    steps: int
    interval_s: float
    build_cpu_s: float
    step_cpu_ms: float  # advancing telemetry and logs, per step
    render_cpu_ms: float  # rendering every exporter once, per step (what one scrape round asks)
    exposition_mb: float  # text served per step
    cpu_ms_per_node_per_step: float
    cpu_share_of_one_core: float  # (step + render) / interval: 1.0 would be a whole core

    def flat(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__slots__}


def measure(spec: ClusterSpec, steps: int = 6, interval_s: float = 10.0) -> SimCost:
    """Build the cluster, then run `steps` steps, rendering every endpoint after each."""
    with tempfile.TemporaryDirectory(prefix="vigil-simcost-") as tmp:
        t0 = time.process_time()
        cluster = SimCluster(load_library(), Path(tmp), spec=spec, now=1.8e9,
                             log_interval_s=interval_s)
        build = time.process_time() - t0
        step_cpu = render_cpu = 0.0
        size = 0
        for k in range(1, steps + 1):
            t0 = time.process_time()
            cluster.step(1.8e9 + k * interval_s)
            t1 = time.process_time()
            for node in cluster.topo.nodes:
                size += len(cluster.exposition(node)) + len(cluster.node_exporter(node))
                size += len(cluster.trainer(node) or "")
            for system in cluster.topo.storage:
                size += len(cluster.storage(system))
            t2 = time.process_time()
            step_cpu += t1 - t0
            render_cpu += t2 - t1
        cluster.logs.close()
    per_step_ms = (step_cpu + render_cpu) / steps * 1000
    return SimCost(
        nodes=spec.nodes, gpus=spec.nodes * spec.gpus_per_node, steps=steps,
        interval_s=interval_s, build_cpu_s=round(build, 3),
        step_cpu_ms=round(step_cpu / steps * 1000, 2),
        render_cpu_ms=round(render_cpu / steps * 1000, 2),
        exposition_mb=round(size / steps / 1e6, 2),
        cpu_ms_per_node_per_step=round(per_step_ms / spec.nodes, 4),
        cpu_share_of_one_core=round(per_step_ms / 1000 / interval_s, 4),
    )
