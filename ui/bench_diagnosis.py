"""`vigil bench diagnosis`: run fault scenarios through the real pipeline and score it.

Everything is real but the cluster: the embedded Tansu broker, the collectors scraping the
simulator's exporters over HTTP and tailing its log files, the detection and incident stages
and the SQL store. Scenarios run one after another, each on a cluster healed of the one
before. The simulator runs at real time (speed 1), so every latency is a wall-clock figure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vigil.collectors.log_file import LogFileCollector
from vigil.collectors.prometheus_scrape import PrometheusScrapeCollector
from vigil.diagnosis.correlate import Correlator
from vigil.diagnosis.detect import DetectStage
from vigil.diagnosis.incidents import IncidentStage
from vigil.diagnosis.library import load_library
from vigil.diagnosis.registry import build_detectors
from vigil.sim.clock import SimClock
from vigil.sim.cluster import SimCluster
from vigil.sim.effects import Timing
from vigil.sim.report import write_report
from vigil.sim.scenario import (
    Scenario,
    draw_scenarios,
    resolve,
    shipped_scenarios,
    sweep_scenarios,
)
from vigil.sim.scoring import Scores, score
from vigil.sim.server import SimServer
from vigil.sim.topology import ClusterSpec
from vigil.sim.truth import HealthyWindow, TruthFault, write_truth
from vigil.ui.sim_sources import scrape_targets, tailed_files

from vigil.broker import EmbeddedBroker
from vigil.bus import Bus
from vigil.settings import KafkaSettings
from vigil.stage import ConsumerStage
from vigil.store import Store
from vigil.worker import Worker

# Consequences shortened so a scenario fits in its observation window (see Timing).
QUICK_TIMING = Timing(nccl_timeout_s=5.0, ib_transport_timeout_s=3.0, crash_propagation_s=1.0,
                      slurmd_timeout_s=8.0, hung_task_s=6.0)


GRACE_S = 1.0  # after a fault is healed, its late alerts still count for this long


@dataclass(frozen=True, slots=True)
class BenchPlan:
    nodes: int
    racks: int
    jobs: int
    random_scenarios: int
    seed: int
    observe_s: float  # how long each scenario runs before the cluster is healed
    gap_s: float  # quiet time between scenarios; longer than scoring's 5 s clock-skew allowance
    # so that one scenario's late alerts are never credited to the next
    healthy_s: float  # fault-free time at the start, for false alerts
    interval_s: float  # simulator sampling and scrape interval
    timing: Timing
    only: tuple[str, ...] = ()  # run just these shipped scenarios (all when empty)
    detectors: tuple[str, ...] = ("log_rules", "metric_rules", "peer", "log_novelty",
                                  "learned")  # as detect.detectors
    sweep: bool = False  # every mode the simulator can play, instead of the scenarios

    @classmethod
    def quick(cls, seed: int) -> BenchPlan:
        return cls(nodes=16, racks=2, jobs=2, random_scenarios=4, seed=seed, observe_s=10.0,
                   gap_s=6.0, healthy_s=24.0, interval_s=2.0, timing=QUICK_TIMING)

    @classmethod
    def all_modes(cls, seed: int) -> BenchPlan:
        """Every playable mode once, 12 at a time on 48 nodes in 12 jobs; about 13 minutes."""
        return cls(nodes=48, racks=3, jobs=12, random_scenarios=0, seed=seed, observe_s=10.0,
                   gap_s=6.0, healthy_s=24.0, interval_s=2.0, timing=QUICK_TIMING, sweep=True)

    @classmethod
    def full(cls, nodes: int, scenarios: int, seed: int, healthy_s: float = 120.0) -> BenchPlan:
        racks = max(1, nodes // 16)
        return cls(nodes=racks * (nodes // racks), racks=racks, jobs=max(1, nodes // 16),
                   random_scenarios=scenarios, seed=seed, observe_s=20.0, gap_s=6.0,
                   healthy_s=healthy_s, interval_s=2.0, timing=QUICK_TIMING)


@dataclass(frozen=True, slots=True)
class BenchResult:
    scores: Scores
    folder: Path
    report: Path
    wall_s: float
    scenarios: int
    alerts: int
    incidents: int

    def flat(self) -> dict[str, float | int | str | None]:
        out: dict[str, float | int | str | None] = {
            "scenarios": self.scenarios, "alerts_total": self.alerts,
            "incidents_total": self.incidents, "wall_s": round(self.wall_s, 1),
            # More than 1 means one fault scattered into several incidents.
            "incidents_per_fault": (round(self.incidents / self.scores.overall.faults, 2)
                                    if self.scores.overall.faults else None),
        }
        out.update(self.scores.flat())
        out["report"] = str(self.report)
        return out


Progress = Callable[[str, int, int], None]


def run_benchmark(
    plan: BenchPlan, folder: Path, progress: Progress = lambda *_: None
) -> BenchResult:
    """Run `plan`, write truth, alerts, incidents and the report into `folder`."""
    t0 = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    library = load_library()
    spec = ClusterSpec(racks=plan.racks, nodes_per_rack=plan.nodes // plan.racks, jobs=plan.jobs,
                       seed=plan.seed)
    clock = SimClock(speed=1.0)
    cluster = SimCluster(library, folder / "sim", spec=spec, now=clock.now(), timing=plan.timing,
                         log_interval_s=10.0)
    rng = np.random.default_rng(plan.seed)
    if plan.sweep:
        scenarios = sweep_scenarios(library, cluster.topo, plan.seed, plan.observe_s)
    else:
        scenarios = [resolve(s, library, cluster.topo, rng) for s in shipped_scenarios()
                     if not plan.only or s.name in plan.only]
        scenarios += draw_scenarios(library, cluster.topo, plan.random_scenarios, plan.seed,
                                    duration_s=plan.observe_s)
    broker = EmbeddedBroker(folder / "tansu.log")
    started: list[Worker | SimServer] = []
    store = Store.open(f"sqlite:///{(folder / 'vigil.db').resolve()}")
    truth: list[TruthFault] = []
    healthy: list[HealthyWindow] = []
    try:
        progress("starting broker and pipeline", 0, len(scenarios))
        broker.start()
        bus = Bus(broker.bootstrap, KafkaSettings(), client_id="bench")
        bus.ensure_topics()
        sim = SimServer(cluster, "127.0.0.1", 0, plan.interval_s, clock)
        stages: list[ConsumerStage] = [
            DetectStage(bus, build_detectors(list(plan.detectors), library, folder)),
            IncidentStage(bus, store, Correlator(library, plan.observe_s)),
        ]
        components: list[Worker | SimServer] = [sim, *stages]
        for component in components:
            component.start()
            started.append(component)
        for stage in stages:
            if not stage.ready.wait(60):
                raise RuntimeError(f"stage {stage.name} did not join its group in 60 s")
        collectors: list[Worker] = [
            PrometheusScrapeCollector(bus, scrape_targets(sim), plan.interval_s),
            LogFileCollector(bus, tailed_files(sim), 0.5, 2000),
        ]
        for collector in collectors:
            collector.start()
            started.append(collector)
        progress("healthy baseline", 0, len(scenarios))
        start = clock.now()
        time.sleep(plan.healthy_s)
        healthy.append(HealthyWindow(start=start, end=clock.now(), nodes=plan.nodes))
        for i, scenario in enumerate(scenarios):
            progress(scenario.name, i, len(scenarios))
            truth += _play(cluster, clock, scenario, plan)
        time.sleep(2.0)  # let the last alerts through the pipeline
    finally:
        for component in reversed(started):
            component.shutdown()
        broker.shutdown()
    alerts, incidents = store.alerts(limit=1_000_000), store.incidents(limit=1_000_000)
    store.close()
    write_truth(folder / "truth.jsonl", truth, healthy)
    scores = score(truth, healthy, alerts, incidents, grace_s=GRACE_S)
    wall = time.monotonic() - t0
    meta = {"nodes": str(plan.nodes), "gpus": str(plan.nodes * 8), "jobs": str(plan.jobs),
            "scenarios": str(len(scenarios)), "seed": str(plan.seed),
            "observe_s": f"{plan.observe_s:g}", "healthy_s": f"{plan.healthy_s:g}",
            "wall_s": f"{wall:.0f}", "alerts": str(len(alerts)), "incidents": str(len(incidents))}
    report = write_report(scores, folder, "Vigil diagnosis benchmark", meta)
    result = BenchResult(scores, folder, report, wall, len(scenarios), len(alerts), len(incidents))
    (folder / "figures.json").write_text(json.dumps(result.flat(), indent=2))
    progress("done", len(scenarios), len(scenarios))
    return result


def _play(cluster: SimCluster, clock: SimClock, scenario: Scenario,
          plan: BenchPlan) -> list[TruthFault]:
    """Inject the scenario's faults on schedule, observe, heal; return the ground truth."""
    start = clock.now()
    out: list[TruthFault] = []
    for planned in sorted(scenario.faults, key=lambda f: f.at_s):
        wait = start + planned.at_s - clock.now()
        if wait > 0:
            time.sleep(wait)
        injection = cluster.inject(planned.fault, planned.target, clock.now(),
                                   duration_s=min(planned.duration_s, plan.observe_s),
                                   scenario=scenario.name)
        assert injection.truth is not None
        out.append(injection.truth)
    # A scenario observes for observe_s, or for as long as its longest fault runs.
    time.sleep(max(0.0, start + max(plan.observe_s, scenario.length_s) - clock.now()))
    cluster.heal_all(clock.now())
    time.sleep(plan.gap_s)
    return out
