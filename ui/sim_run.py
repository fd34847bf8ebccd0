"""`vigil sim run`: the simulated cluster on its own, for a real Prometheus or a scenario."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from vigil.diagnosis.library import load_library
from vigil.sim.clock import SimClock
from vigil.sim.cluster import SimCluster
from vigil.sim.inventory_export import to_inventory
from vigil.sim.scenario import Scenario, load_scenario, resolve
from vigil.sim.server import SimServer
from vigil.sim.topology import ClusterSpec
from vigil.sim.truth import HealthyWindow, TruthFault, write_truth


def file_sd(sim: SimServer) -> list[dict[str, object]]:
    """Prometheus file_sd_configs entries for every exporter the simulator serves."""
    host = urllib.parse.urlsplit(sim.url).netloc
    storage = set(sim.cluster.topo.storage)
    return [{"targets": [host],
             "labels": {"__metrics_path__": e.path, "exporter": e.exporter,
                        ("system" if e.host in storage else "node"): e.host}}
            for e in sim.cluster.endpoints()]


def run_sim(
    spec: ClusterSpec, folder: Path, host: str, port: int, interval_s: float, speed: float,
    scenario_file: Path | None, stop: threading.Event,
    say: Callable[[str], None] = print,
) -> list[TruthFault]:
    """Serve the cluster until `stop` (or the scenario's end); return what was injected."""
    library = load_library()
    clock = SimClock(speed=speed)
    cluster = SimCluster(library, folder / "logs", spec=spec, now=clock.now())
    scenario: Scenario | None = None
    if scenario_file is not None:
        scenario = resolve(load_scenario(scenario_file), library, cluster.topo,
                           np.random.default_rng(spec.seed))
    sim = SimServer(cluster, host, port, interval_s, clock)
    sim.start()
    (folder / "file_sd.json").write_text(json.dumps(file_sd(sim), indent=1))
    (folder / "inventory.yaml").write_text(
        yaml.safe_dump(to_inventory(cluster.topo), sort_keys=False))
    say(f"serving {spec.nodes} nodes ({spec.nodes * spec.gpus_per_node} GPUs) at {sim.url}")
    say(f"  Prometheus file_sd targets: {folder / 'file_sd.json'}")
    say(f"  inventory (vigil topo … -i): {folder / 'inventory.yaml'}")
    say(f"  logs under {folder / 'logs'}")
    truth: list[TruthFault] = []
    start = clock.now()
    try:
        pending = sorted(scenario.faults, key=lambda f: f.at_s) if scenario else []
        while not stop.wait(0.2):
            now = clock.now()
            while pending and now >= start + pending[0].at_s:
                planned = pending.pop(0)
                injection = cluster.inject(planned.fault, planned.target, now,
                                           planned.duration_s, scenario.name if scenario else "")
                assert injection.truth is not None
                truth.append(injection.truth)
                say(f"  t+{now - start:.0f}s injected {planned.fault} at {planned.target}")
            if scenario is not None and not pending and now >= start + scenario.length_s:
                break
    finally:
        sim.shutdown()
        cluster.logs.close()
        if scenario is not None:
            healthy = [] if truth else [HealthyWindow(start, clock.now(), spec.nodes)]
            write_truth(folder / "truth.jsonl", truth, healthy)
            say(f"  ground truth: {folder / 'truth.jsonl'}")
    return truth

