"""The `vigil` command: start Vigil, inject simulated faults, read incidents, check settings."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from vigil.ui.cli_bench import bench_app
from vigil.ui.cli_common import ConfigOption, JsonOption, fail, out
from vigil.ui.cli_diagnose import diagnose_app
from vigil.ui.cli_faults import faults_app
from vigil.ui.cli_topo import topo_app
from vigil.ui.runstate import read_state
from vigil.ui.views import incident_row

from vigil import log as vlog
from vigil.records import IncidentState
from vigil.settings import Settings, SettingsError, load_settings
from vigil.store import Store

app = typer.Typer(help="Vigil: fault detection, diagnosis and recovery for AI clusters.",
                  no_args_is_help=True, add_completion=False)
sim_app = typer.Typer(help="The simulated cluster: serve one, inject faults, list them.",
                      no_args_is_help=True)
config_app = typer.Typer(help="Check settings files.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
app.add_typer(config_app, name="config")
app.add_typer(bench_app, name="bench")
app.add_typer(topo_app, name="topo")
app.add_typer(faults_app, name="faults")
app.add_typer(diagnose_app, name="diagnose")



def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except SettingsError as exc:
        fail(str(exc))


@app.command()
def up(
    config: ConfigOption = None,
    duration: Annotated[float | None, typer.Option(
        help="Stop after this many seconds (default: run until Ctrl-C).")] = None,
) -> None:
    """Start the embedded broker, simulated cluster, collectors, pipeline and console."""
    from vigil.ui.runtime import Runtime, Step  # heavy imports only for this command

    settings = _settings(config)
    vlog.configure(settings.log_level, stream=_log_file(settings))
    if (running := read_state(settings.data_dir)) is not None:
        fail(f"Vigil already runs with data dir {settings.data_dir} (pid {running.pid}); "
              "stop it first or pass another VIGIL_DATA_DIR")
    runtime = Runtime(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t0 = time.monotonic()

    def show(step: Step) -> None:
        out.print(f"  [green]✓[/green] {step.name:<18} {step.detail} "
                  f"[dim]({step.seconds:.1f} s)[/dim]", highlight=False)

    out.print(f"[bold]Starting Vigil[/bold] (data in {settings.data_dir.resolve()})")
    try:
        with out.status("starting…"):
            state = runtime.start(on_step=show)
    except Exception as exc:
        runtime.shutdown()
        fail(f"start-up failed: {exc}\n  logs: {settings.data_dir.resolve() / 'vigil.log'}")
    out.print(f"[bold green]Vigil ready[/bold green] in {time.monotonic() - t0:.1f} s.")
    if state.console_url:
        out.print(f"  console  {state.console_url}")
    if state.sim_url:
        out.print("  try      vigil sim inject gpu.xid.79 --target gpu:gpu-a-002/3")
    out.print("  then     vigil incidents      (Ctrl-C stops everything)")
    deadline = time.monotonic() + duration if duration else None
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() > deadline:
            break
    out.print("Stopping…")
    runtime.shutdown()
    out.print("Stopped.")


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show what `vigil up` runs and whether each part answers."""
    settings = _settings(config)
    state = read_state(settings.data_dir)
    if state is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            out.print(f"Vigil is not running (no live run state in {settings.data_dir}).")
        raise typer.Exit(1)
    checks = {
        "kafka": _tcp_ok(state.bootstrap),
        "simulator": _http_ok(f"{state.sim_url}/targets") if state.sim_url else None,
        "console": _http_ok(f"{state.console_url}/_stcore/health") if state.console_url else None,
        "self_metrics": _http_ok(state.metrics_url) if state.metrics_url else None,
    }
    if as_json:
        print(json.dumps({"running": True, "pid": state.pid, "bootstrap": state.bootstrap,
                          "embedded_broker": state.embedded_broker, "sim_url": state.sim_url,
                          "console_url": state.console_url, "metrics_url": state.metrics_url,
                          "uptime_s": round(time.time() - state.started_at, 1),
                          **{f"{k}_ok": v for k, v in checks.items()}}))
        return
    table = Table(title=f"Vigil (pid {state.pid}, up {time.time() - state.started_at:.0f} s)")
    table.add_column("part")
    table.add_column("where")
    table.add_column("answers")
    where = {"kafka": state.bootstrap, "simulator": state.sim_url,
             "console": state.console_url, "self_metrics": state.metrics_url}
    for part, ok in checks.items():
        mark = "-" if ok is None else ("[green]yes[/green]" if ok else "[red]no[/red]")
        table.add_row(part, where[part] or "off", mark)
    out.print(table)


@app.command()
def incidents(
    config: ConfigOption = None,
    as_json: JsonOption = False,
    state: Annotated[str, typer.Option(help="open, resolved or all")] = "all",
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
) -> None:
    """List incidents, newest first."""
    settings = _settings(config)
    if state not in ("open", "resolved", "all"):
        fail(f"--state must be open, resolved or all, not {state!r}")
    wanted = None if state == "all" else IncidentState(state)
    if not _store_exists(settings.database_url):
        print("[]") if as_json else out.print("No incidents (no store yet; start `vigil up`).")
        return
    with Store.open(settings.database_url) as store:
        rows = [incident_row(i) for i in store.incidents(wanted, limit)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print("No incidents.")
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("severity")
    table.add_column("fault", no_wrap=True)
    table.add_column("root entity", no_wrap=True)
    table.add_column("opened (UTC)", no_wrap=True)
    table.add_column("alerts", justify="right")
    table.add_column("id", no_wrap=True)
    colour = {"critical": "red", "warning": "yellow", "info": "blue"}
    for r in rows:
        sev = str(r["severity"])
        table.add_row(f"[{colour.get(sev, 'white')}]{sev}[/]", str(r["root_fault_id"]),
                      str(r["root_entity"]), str(r["opened_at"])[5:19].replace("T", " "),
                      str(r["alerts"]), str(r["id"]))
    out.print(table)


@sim_app.command("inject")
def sim_inject(
    fault: Annotated[str, typer.Argument(help="Fault-mode id, e.g. gpu.xid.79.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Entity, e.g. gpu:gpu-a-002/3.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Inject FAULT into the running simulation at TARGET."""
    data = _sim_call(config, "/inject", {"fault": fault, "target": target})
    if as_json:
        print(json.dumps(data))
    else:
        out.print(f"Injected [bold]{fault}[/bold] at {target}.", highlight=False)
        out.print(f"  {data['log_line']}", highlight=False, markup=False)


@sim_app.command("run")
def sim_run(
    nodes: Annotated[int, typer.Option(min=1, help="Nodes in all (8 GPUs each).")] = 32,
    racks: Annotated[int, typer.Option(min=1, help="Racks; must divide NODES.")] = 1,
    jobs: Annotated[int, typer.Option(min=0, help="Training jobs.")] = 2,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between samples.")] = 10.0,
    speed: Annotated[float, typer.Option(
        min=0.01, help="Simulated seconds per real second.")] = 1.0,
    port: Annotated[int, typer.Option(help="HTTP port (0: a free one).")] = 9400,
    scenario: Annotated[Path | None, typer.Option(
        help="Scenario YAML to play; the run ends when it does.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Logs, file_sd.json, truth.")] = Path(
        ".vigil/sim"),
    seed: Annotated[int, typer.Option(help="Seed for topology, noise and targets.")] = 7,
) -> None:
    """Serve a simulated cluster (exporters over HTTP, log files) until Ctrl-C."""
    from vigil.sim.scenario import ScenarioError
    from vigil.sim.topology import ClusterSpec
    from vigil.ui.sim_run import run_sim

    if nodes % racks:
        fail(f"--nodes ({nodes}) must be a multiple of --racks ({racks})")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = ClusterSpec(racks=racks, nodes_per_rack=nodes // racks, jobs=jobs, seed=seed)
    try:
        run_sim(spec, out_dir, "127.0.0.1", port, interval, speed, scenario, stop,
                say=lambda text: out.print(text, highlight=False, markup=False))
    except ScenarioError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot serve on port {port}: {exc.strerror}")


@sim_app.command("faults")
def sim_faults(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the faults and targets the running simulation accepts."""
    data = _sim_call(config, "/faults", None)
    if as_json:
        print(json.dumps(data))
        return
    table = Table(title="Injectable faults")
    table.add_column("fault")
    table.add_column("component")
    table.add_column("title")
    for f in data["faults"]:
        table.add_row(f["id"], f["component"], f["title"])
    out.print(table)
    out.print(f"targets: {', '.join(data['targets'])}", highlight=False)


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="YAML settings file.")]) -> None:
    """Validate FILE (with the environment applied) and report every problem with its key."""
    if not file.is_file():
        fail(f"{file}: no such file")
    try:
        load_settings(file)
    except SettingsError as exc:
        fail(str(exc), code=1)
    out.print(f"{file}: OK")


def _sim_call(config: Path | None, path: str, body: dict[str, str] | None) -> Any:
    settings = _settings(config)
    state = read_state(settings.data_dir)
    if state is None or state.sim_url is None:
        fail(f"no simulation is running with data dir {settings.data_dir}; start `vigil up`")
    request = urllib.request.Request(
        state.sim_url + path, method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except (json.JSONDecodeError, AttributeError):
            reason = exc.reason
        fail(str(reason))
    except OSError as exc:
        fail(f"the simulation at {state.sim_url} does not answer: {exc}")


def _log_file(settings: Settings) -> Any:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return (settings.data_dir / "vigil.log").open("a", buffering=1)


def _store_exists(url: str) -> bool:
    """False only for a SQLite file that is not there: reading must not create a store."""
    if not url.startswith("sqlite:///"):
        return True
    return Path(url.removeprefix("sqlite:///")).exists()


def _tcp_ok(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    app()


if __name__ == "__main__":
    main()
