"""`vigil bench …`: measure Vigil and its simulator; figures, never pass/fail."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from vigil.ui.cli_common import JsonOption, err, fail, out

from vigil import log as vlog

bench_app = typer.Typer(help="Measure Vigil: figures, never pass/fail.", no_args_is_help=True)


@bench_app.command("detect")
def bench_detect(
    quick: Annotated[bool, typer.Option(
        "--quick", help="A smaller workload: 64 nodes' metrics, 300,000 log lines.")] = False,
    detectors: Annotated[str, typer.Option(
        help="Comma-separated detector names, as detect.detectors.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Samples and log lines a second one detection process sustains from Kafka, and two."""
    from vigil.diagnosis.registry import DETECTORS
    from vigil.ui.bench_detect import run

    from vigil.settings import DetectSettings

    names = [n.strip() for n in detectors.split(",") if n.strip()] or DetectSettings().detectors
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        fail(f"--detectors: unknown {unknown}; known: {', '.join(DETECTORS)}")
    vlog.configure("warning")
    size: dict[str, int] = {"nodes": 16, "rounds": 20, "lines": 300_000} if quick else {}
    with err.status("starting…") as status:
        figures = run(names, progress=status.update, **size)
    _print_figures(figures, as_json)


@bench_app.command("diagnosis")
def bench_diagnosis(
    quick: Annotated[bool, typer.Option(
        "--quick",
        help="16 nodes, the shipped scenarios and 4 drawn ones; under 5 minutes.")] = False,
    all_modes: Annotated[bool, typer.Option(
        "--all-modes", help="Every fault mode the simulator can play, once each, 12 at a "
        "time on 48 nodes (about 13 minutes); for recall over the library.")] = False,
    nodes: Annotated[int, typer.Option(min=4, help="Cluster size (ignored with --quick).")] = 64,
    scenarios: Annotated[int, typer.Option(
        min=0, help="Scenarios drawn from the published fault mix, besides the shipped "
        "ones (ignored with --quick).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed for targets, the mix and noise.")] = 7,
    healthy: Annotated[float, typer.Option(
        min=0, help="Fault-free seconds first, for false alerts (ignored with --quick).")] = 120,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder for truth, store, report (default .vigil/bench/...).")] = None,
    detectors: Annotated[str, typer.Option(
        help="Comma-separated detector names, as detect.detectors (default: its "
        "default).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Run fault scenarios through the real pipeline and score detection and root cause."""
    import dataclasses

    from vigil.diagnosis.registry import DETECTORS
    from vigil.ui.bench_diagnosis import BenchPlan, run_benchmark

    from vigil.settings import DetectSettings

    names = tuple(name.strip() for name in detectors.split(",") if name.strip()) or tuple(
        DetectSettings().detectors)
    unknown = [name for name in names if name not in DETECTORS]
    if unknown or not names:
        fail(f"--detectors: unknown {unknown or 'none given'}; known: {', '.join(DETECTORS)}")
    if all_modes:
        plan = BenchPlan.all_modes(seed)
    else:
        plan = BenchPlan.quick(seed) if quick else BenchPlan.full(nodes, scenarios, seed, healthy)
    plan = dataclasses.replace(plan, detectors=names)
    folder = out_dir or Path(".vigil") / "bench" / time.strftime("diagnosis-%Y%m%d-%H%M%S")
    vlog.configure("warning", stream=_open_log(folder))
    with err.status("starting…") as status:
        def progress(what: str, done: int, total: int) -> None:
            status.update(f"scenario {done}/{total}: {what}")

        result = run_benchmark(plan, folder, progress)
    figures = result.flat()
    if as_json:
        print(json.dumps(figures))
        return
    table = Table(title=f"Diagnosis benchmark ({plan.nodes} nodes, {result.scenarios} scenarios,"
                        f" {result.wall_s:.0f} s)", box=box.SIMPLE_HEAD)
    table.add_column("layer")
    for column in ("faults", "recall", "precision", "first alert p50", "top-1", "top-3"):
        table.add_column(column, justify="right")
    layers = [("overall", result.scores.overall), *sorted(result.scores.by_layer.items())]
    for name, s in layers:
        table.add_row(name, str(s.faults), _pct(s.recall), _pct(s.precision),
                      _secs(s.alert_latency_p50_s), _pct(s.root_cause_top1),
                      _pct(s.root_cause_top3))
    out.print(table)
    out.print(f"false alerts per 1000 node-hours: "
              f"{figures.get('false_alerts_per_1000_node_hours')}; report: {result.report}")


@bench_app.command("sim")
def bench_sim(
    nodes: Annotated[int, typer.Option(min=1, help="Nodes (8 GPUs each).")] = 1024,
    steps: Annotated[int, typer.Option(min=1, help="Steps to time.")] = 6,
    interval: Annotated[float, typer.Option(help="Sampling interval, seconds.")] = 10.0,
    as_json: JsonOption = False,
) -> None:
    """CPU cost of simulating a cluster of NODES at INTERVAL, every endpoint rendered."""
    from vigil.sim.cost import measure
    from vigil.sim.topology import ClusterSpec

    racks = max(1, nodes // 32)
    if nodes % racks:
        racks = 1
    cost = measure(ClusterSpec(racks=racks, nodes_per_rack=nodes // racks,
                               jobs=max(1, nodes // 64)), steps, interval)
    _print_figures(cost.flat(), as_json)


@bench_app.command("topology")
def bench_topology(
    gpus: Annotated[int, typer.Option(min=8, help="GPUs in the generated cluster.")] = 100_000,
    samples: Annotated[int, typer.Option(min=1, help="Timed calls per query.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed for the entities queried.")] = 7,
    as_json: JsonOption = False,
) -> None:
    """Build a GPUS-GPU cluster graph; time build, snapshot, memory and every query."""
    from vigil.ui.bench_topology import run

    with err.status("starting…") as status:
        figures = run(gpus, samples, seed, progress=status.update)
    _print_figures(figures, as_json)


@bench_app.command("collectors")
def bench_collectors(
    rounds: Annotated[int, typer.Option(min=1, help="Collection intervals to run.")] = 60,
    interval: Annotated[float, typer.Option(help="The interval they stand for, seconds.")] = 10.0,
    log_rate: Annotated[float, typer.Option(
        min=0, help="Kernel-log lines written per second.")] = 20.0,
    kafka: Annotated[bool, typer.Option(
        help="Publish through the spool to a real Kafka (the embedded Tansu).")] = True,
    as_json: JsonOption = False,
) -> None:
    """What one 8-GPU node's collectors cost: CPU, memory, and the most one core sustains."""
    from vigil.ui.bench_collectors import run

    with err.status("starting…") as status:
        figures = run(rounds, interval, log_rate, kafka, progress=status.update)
    _print_figures(figures, as_json)


def _print_figures(figures: dict[str, Any], as_json: bool) -> None:
    """One flat JSON object for scripts, or one aligned `name value` line each for people."""
    if as_json:
        print(json.dumps(figures))
        return
    width = max(map(len, figures), default=0)
    for key, value in figures.items():
        out.print(f"{key:<{width}} {value}", highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _open_log(folder: Path) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / "vigil.log").open("a", buffering=1)
