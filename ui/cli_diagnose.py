"""`vigil diagnose …`: the detectors, run over files instead of live streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from vigil.diagnosis.library import LibraryError, load_library
from vigil.diagnosis.offline_logs import diagnose_logs
from vigil.diagnosis.offline_metrics import MetricsFileError, diagnose_metrics
from vigil.ui.cli_common import JsonOption, fail, out

diagnose_app = typer.Typer(help="Diagnose from files: logs and metric CSVs.",
                           no_args_is_help=True)


@diagnose_app.command("logs")
def logs(files: Annotated[list[Path], typer.Argument(help="Plain log files, any format.")],
         year: Annotated[int | None, typer.Option(
             help="Year for syslog timestamps, which carry none (default: this year).")] = None,
         as_json: JsonOption = False) -> None:
    """Every line a fault mode's log signal matches, and every line whose template is rare in
    these files; with --json one object per line (JSON Lines)."""
    for file in files:
        if not file.is_file():
            fail(f"{file}: no such file")
    try:
        library = load_library()
    except LibraryError as exc:
        fail(str(exc))
    found = 0
    for finding in diagnose_logs(files, library, year):
        found += 1
        if as_json:
            print(json.dumps(finding.flat()), flush=False)
            continue
        what = finding.fault_id or finding.anomaly
        out.print(f"{finding.file}:{finding.line} [bold]{what}[/bold] "
                  f"({finding.score:.2f}) ", end="", highlight=False)
        out.print(finding.text[:200], highlight=False, markup=False)
    if not as_json and not found:
        out.print("No findings.")


@diagnose_app.command("metrics")
def metrics(file: Annotated[Path, typer.Argument(help="CSV: a timestamp column, value columns.")],
            window: Annotated[int, typer.Option(
                min=32, help="Recent points each column's baseline keeps.")] = 256,
            as_json: JsonOption = False) -> None:
    """An anomaly score in [0, 1] and a 0/1 label per timestamp, learnt online from the start
    of the file (no labels used); with --json one object per row (JSON Lines)."""
    if not file.is_file():
        fail(f"{file}: no such file")
    rows = flagged = 0
    try:
        for row in diagnose_metrics(file, window):
            rows += 1
            flagged += row.label
            if as_json:
                print(json.dumps(row.flat()), flush=False)
            elif row.label:
                out.print(f"{row.timestamp} [bold]anomaly[/bold] ({row.score:.2f}) in "
                          f"{row.column}", highlight=False)
    except MetricsFileError as exc:
        fail(str(exc))
    if not as_json:
        out.print(f"{rows} rows, {flagged} labelled anomalous")
