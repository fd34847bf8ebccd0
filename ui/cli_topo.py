"""`vigil topo …`: ask the cluster's graph questions from the command line."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from vigil.topology import queries
from vigil.topology.changes import apply_snapshot
from vigil.topology.fabric import (
    apply_fabric,
    apply_lldp,
    parse_ibnetdiscover,
    parse_lldpctl_json,
)
from vigil.topology.graph import Topology
from vigil.topology.inventory import InventoryError, load_inventory, validate_inventory
from vigil.topology.kubernetes import KubernetesError, snapshot_kubernetes
from vigil.topology.slurm import SlurmError, snapshot_slurm
from vigil.ui.cli_common import JsonOption, fail, out

topo_app = typer.Typer(help="The cluster's topology: validate inventories, ask questions.",
                       no_args_is_help=True)

# `vigil up` keeps the live graph (history included) in the first, its inventory in the second.
DEFAULT_SOURCES = (Path(".vigil/topology.pickle"), Path(".vigil/inventory.yaml"))
GRAPH_SUFFIX = ".pickle"
InventoryOption = Annotated[Path | None, typer.Option(
    "--inventory", "-i", show_default=False,
    help="Inventory file (YAML or JSON) or a graph file (*.pickle) from `vigil up` or "
    "`vigil topo build`. Default: .vigil/topology.pickle, else .vigil/inventory.yaml.")]
AtOption = Annotated[str | None, typer.Option(
    "--at", help="Ask about the cluster as it was then: unix seconds or an ISO 8601 time "
    "(graph files keep history).")]


def _load(path: Path | None) -> Topology:
    if path is None:
        path = next((p for p in DEFAULT_SOURCES if p.is_file()), DEFAULT_SOURCES[-1])
    if not path.is_file():
        fail(f"{path}: no such inventory or graph file (pass --inventory FILE)")
    if path.suffix == GRAPH_SUFFIX:
        try:
            return Topology.load(path)
        except (OSError, ValueError) as exc:
            fail(str(exc))
    try:
        return load_inventory(path)
    except InventoryError as exc:
        fail(str(exc))


def parse_time(text: str | None) -> float | None:
    """`--at` as unix seconds; exits with a clear error for what is neither form."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--at {text!r}: not unix seconds or an ISO 8601 time such as 2026-11-22T03:00Z")
    if moment.tzinfo is None:
        fail(f"--at {text!r}: give a time zone (Z or +HH:MM), times are compared in UTC")
    return moment.timestamp()


def _graph_at(path: Path | None, at: str | None, *entities: str) -> tuple[Topology, float | None]:
    """The graph and the `--at` time, once every entity named is known to exist then."""
    topo, when = _load(path), parse_time(at)
    _known(topo, *entities, at=when)
    return topo, when


def _known(topo: Topology, *entities: str, at: float | None = None) -> None:
    for entity in entities:
        if not topo.exists(entity, at):
            when = "" if at is None else f" at {at:g}"
            fail(f"no entity {entity!r} in the topology{when}")


@topo_app.command("validate")
def validate(file: Annotated[Path, typer.Argument(help="Inventory file.")],
             as_json: JsonOption = False) -> None:
    """Check FILE against the inventory format; every problem with its line and key."""
    if not file.is_file():
        fail(f"{file}: no such file")
    problems = validate_inventory(file)
    if as_json:
        print(json.dumps({"file": str(file), "valid": not problems, "problems": problems}))
    else:
        for problem in problems:
            out.print(problem, highlight=False, markup=False)
        if not problems:
            out.print(f"{file}: OK")
    if problems:
        raise typer.Exit(1)


@topo_app.command("show")
def show(entity: Annotated[str, typer.Argument(help="Entity id, e.g. node:gpu-a-001.")],
         inventory: InventoryOption = None, at: AtOption = None,
         as_json: JsonOption = False) -> None:
    """An entity, its attributes and its relations."""
    topo, when = _graph_at(inventory, at, entity)
    found = topo.entity(entity, when)
    assert found is not None
    relations = [(r.src, str(r.kind), r.dst) for r in topo.relations(entity, when)]
    if as_json:
        print(json.dumps({"id": found.id, "kind": str(found.kind), "attrs": dict(found.attrs),
                          "valid_from": found.valid_from, "valid_to": found.valid_to,
                          "relations": [{"src": s, "kind": k, "dst": d}
                                        for s, k, d in relations]}))
        return
    lifetime = f"since {found.valid_from:g}" + (
        f", until {found.valid_to:g}" if found.valid_to is not None else "")
    out.print(f"[bold]{found.id}[/bold] ({found.kind}, {lifetime})", highlight=False)
    for key, value in sorted(found.attrs.items()):
        out.print(f"  {key} = {value}", highlight=False, markup=False)
    table = Table("from", "relation", "to")
    for src, kind, dst in relations:
        table.add_row(src, kind, dst)
    out.print(table)


@topo_app.command("blast-radius")
def blast_radius(entity: Annotated[str, typer.Argument(help="Entity id.")],
                 inventory: InventoryOption = None, at: AtOption = None,
                 as_json: JsonOption = False) -> None:
    """Everything that fails, or is hurt, when ENTITY fails."""
    topo, when = _graph_at(inventory, at, entity)
    hit = sorted(queries.blast_radius(topo, entity, when))
    by_kind: dict[str, int] = {}
    for e in hit:
        by_kind[e.split(":", 1)[0]] = by_kind.get(e.split(":", 1)[0], 0) + 1
    if as_json:
        print(json.dumps({"entity": entity, "count": len(hit), "by_kind": by_kind,
                          "entities": hit}))
        return
    out.print(f"{entity} takes {len(hit)} entities with it: "
              + ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())), highlight=False)
    for e in hit:
        out.print(f"  {e}", highlight=False, markup=False)


@topo_app.command("common")
def common(entities: Annotated[list[str], typer.Argument(help="Two or more entity ids.")],
           inventory: InventoryOption = None, at: AtOption = None,
           as_json: JsonOption = False) -> None:
    """What ENTITIES depend on in common (switches, links, storage, racks, power)."""
    if len(entities) < 2:
        fail("give at least two entities")
    topo, when = _graph_at(inventory, at, *entities)
    shared = queries.shared_dependencies(topo, entities, at=when)
    if as_json:
        print(json.dumps([{"entity": e, "covers": n} for e, n in shared]))
        return
    if not shared:
        out.print("Nothing in common.")
        return
    table = Table("shared dependency", f"covers (of {len(entities)})")
    for e, n in shared:
        table.add_row(e, str(n))
    out.print(table)


@topo_app.command("path")
def path(a: Annotated[str, typer.Argument(help="From entity.")],
         b: Annotated[str, typer.Argument(help="To entity.")],
         inventory: InventoryOption = None, at: AtOption = None,
         as_json: JsonOption = False) -> None:
    """The shortest physical path (cables, switches, components) from A to B."""
    topo, when = _graph_at(inventory, at, a, b)
    route = queries.path(topo, a, b, when)
    if as_json:
        print(json.dumps({"from": a, "to": b, "hops": max(0, len(route) - 1), "path": route}))
        return
    if not route:
        out.print(f"No physical path from {a} to {b}.")
        raise typer.Exit(1)
    out.print(" → ".join(route), highlight=False)


@topo_app.command("build")
def build(
    output: Annotated[Path, typer.Option("--output", "-o", help="Graph file to write "
                                         "(*.pickle); the other topo commands read it.")],
    inventory: Annotated[Path | None, typer.Option(
        "--inventory", "-i", help="Inventory file to start from (YAML or JSON).")] = None,
    slurm: Annotated[bool, typer.Option(
        "--slurm", help="Add nodes, partitions and jobs from this host's scontrol.")] = False,
    k8s: Annotated[bool, typer.Option(
        "--k8s", help="Add nodes, pods and training jobs from Kubernetes (kubeconfig as "
        "kubectl finds it, or --kubeconfig).")] = False,
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="kubeconfig file for --k8s.")] = None,
    ibnetdiscover: Annotated[list[Path] | None, typer.Option(
        "--ibnetdiscover", help="ibnetdiscover output to add (repeatable).")] = None,
    lldp: Annotated[list[str] | None, typer.Option(
        "--lldp", help="HOST=FILE: `lldpctl -f json` output taken on HOST (repeatable).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a graph from an inventory and live sources, and report where they disagree."""
    if output.suffix != GRAPH_SUFFIX:
        fail(f"--output {output}: a graph file's name ends in {GRAPH_SUFFIX}")
    at = time.time()
    topo = _load(inventory) if inventory is not None else Topology()
    sources = [str(inventory)] if inventory is not None else []
    conflicts: list[str] = []
    if slurm:
        try:
            snapshot_slurm(topo, at)
        except SlurmError as exc:
            fail(str(exc))
        sources.append("slurm")
    if k8s:
        try:
            apply_snapshot(topo, snapshot_kubernetes(
                at, kubeconfig=str(kubeconfig) if kubeconfig else None))
        except KubernetesError as exc:
            fail(str(exc))
        sources.append("k8s")
    for file in ibnetdiscover or []:
        text = _read(file)
        try:
            conflicts += apply_fabric(topo, parse_ibnetdiscover(text), at)
        except ValueError as exc:
            fail(f"{file}: {exc}")
        sources.append(str(file))
    for item in lldp or []:
        host, sep, name = item.partition("=")
        if not sep or not host or not name:
            fail(f"--lldp {item!r}: give HOST=FILE")
        try:
            conflicts += apply_lldp(topo, host, parse_lldpctl_json(_read(Path(name))), at)
        except ValueError as exc:
            fail(f"{name}: {exc}")
        sources.append(name)
    output.parent.mkdir(parents=True, exist_ok=True)
    topo.save(output)
    summary = {"output": str(output), "sources": sources, "entities": len(topo),
               "relations": topo.relation_count(), "conflicts": conflicts}
    if as_json:
        print(json.dumps(summary))
        return
    out.print(f"{output}: {len(topo)} entities, {topo.relation_count()} relations from "
              f"{', '.join(sources) or 'nothing'}", highlight=False)
    for conflict in conflicts:
        out.print(f"  [yellow]conflict:[/yellow] {conflict}", highlight=False)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
