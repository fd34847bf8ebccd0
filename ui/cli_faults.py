"""`vigil faults …`: browse the fault-mode library and check library files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.table import Table
from vigil.diagnosis.library import (
    FaultLibrary,
    Layer,
    LibraryError,
    load_library,
    schema,
)
from vigil.diagnosis.log_match import consistency_problems
from vigil.ui.cli_common import JsonOption, fail, out

faults_app = typer.Typer(help="The fault-mode library: list, show, check.", no_args_is_help=True)

LAYERS = get_args(Layer)
FolderOption = Annotated[Path | None, typer.Option(
    "--library", "-l", help="A folder of library files (default: the shipped library).")]


def _library(folder: Path | None) -> FaultLibrary:
    if folder is not None and not folder.is_dir():
        fail(f"{folder}: no such folder")
    try:
        return load_library(folder)
    except LibraryError as exc:
        fail(str(exc))


@faults_app.command("list")
def list_faults(
    layer: Annotated[str | None, typer.Option(
        "--layer", help=f"Only this layer: {', '.join(LAYERS)}.")] = None,
    folder: FolderOption = None, as_json: JsonOption = False,
) -> None:
    """Every fault mode: id, layer, severity, title."""
    if layer is not None and layer not in LAYERS:
        fail(f"--layer {layer!r}: not a layer; layers: {', '.join(LAYERS)}")
    modes = [m for m in _library(folder) if layer is None or m.layer == layer]
    modes.sort(key=lambda m: (m.layer, m.id))
    if as_json:
        print(json.dumps([{"id": m.id, "layer": m.layer, "component": m.component,
                           "severity": str(m.severity), "title": m.title,
                           "playbook": m.playbook} for m in modes]))
        return
    table = Table("id", "layer", "severity", "title", title=f"{len(modes)} fault modes")
    for m in modes:
        table.add_row(m.id, m.layer, str(m.severity), m.title)
    out.print(table)


@faults_app.command("show")
def show(fault_id: Annotated[str, typer.Argument(help="Fault-mode id, e.g. gpu.xid.79.")],
         folder: FolderOption = None, as_json: JsonOption = False) -> None:
    """One fault mode in full: signals, causes, what it leads to, its playbook and sources."""
    library = _library(folder)
    if fault_id not in library:
        close = [i for i in library.ids if fault_id.split(".")[0] in i][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        fail(f"no fault mode {fault_id!r}{hint}")
    mode = library.get(fault_id)
    if as_json:
        print(mode.model_dump_json())
        return
    out.print(f"[bold]{mode.id}[/bold]: {mode.title}", highlight=False)
    out.print(f"layer {mode.layer}, component {mode.component}, severity {mode.severity}, "
              f"playbook {mode.playbook}", highlight=False)
    out.print(mode.description, highlight=False, markup=False)
    for signal in mode.signals.logs:
        out.print(f"  log: {signal.pattern}", highlight=False, markup=False)
    for metric in mode.signals.metrics:
        out.print(f"  metric: {metric.metric} {metric.condition} {metric.threshold} "
                  f"for {metric.for_s:g} s", highlight=False, markup=False)
    for title, items in (("example", [mode.example] if mode.example else []),
                         ("near miss", mode.near_miss), ("causes", mode.likely_causes),
                         ("leads to", mode.downstream), ("source", mode.references)):
        for item in items:
            out.print(f"  {title}: {item}", highlight=False, markup=False)


@faults_app.command("check")
def check(folder: Annotated[Path | None, typer.Argument(
              help="A folder of library files (default: the shipped library).")] = None,
          as_json: JsonOption = False) -> None:
    """Load a library and replay its examples: each must raise its own mode and no other, no
    near miss may raise its mode. Every problem names its file or mode."""
    if folder is not None and not folder.is_dir():
        fail(f"{folder}: no such folder")
    try:
        library = load_library(folder)
        problems = consistency_problems(library)
    except LibraryError as exc:
        library, problems = None, [str(exc)]
    where = str(folder) if folder else "shipped library"
    if as_json:
        print(json.dumps({"library": where, "modes": len(library) if library else 0,
                          "valid": not problems, "problems": problems}))
    else:
        for problem in problems:
            out.print(problem, highlight=False, markup=False)
        if library is not None and not problems:
            out.print(f"{where}: {len(library)} fault modes, OK")
    if problems:
        raise typer.Exit(1)


@faults_app.command("schema")
def print_schema() -> None:
    """The JSON Schema of a library file."""
    print(json.dumps(schema(), indent=2))
