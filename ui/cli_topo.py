"""`vigil topo …`: ask the cluster's graph questions from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from vigil.topology import queries
from vigil.topology.graph import Topology
from vigil.topology.inventory import InventoryError, load_inventory, validate_inventory
from vigil.ui.cli_common import JsonOption, fail, out

topo_app = typer.Typer(help="The cluster's topology: validate inventories, ask questions.",
                       no_args_is_help=True)

DEFAULT_INVENTORY = Path(".vigil/inventory.yaml")
InventoryOption = Annotated[Path, typer.Option(
    "--inventory", "-i", help="Inventory file (YAML or JSON); `vigil up` and `vigil sim run` "
    "write one for the simulated cluster.")]


def _load(path: Path) -> Topology:
    if not path.is_file():
        fail(f"{path}: no such inventory file (pass --inventory FILE)")
    try:
        return load_inventory(path)
    except InventoryError as exc:
        fail(str(exc))


def _known(topo: Topology, *entities: str) -> None:
    for entity in entities:
        if not topo.exists(entity):
            fail(f"no entity {entity!r} in the topology")


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
         inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """An entity, its attributes and its relations."""
    topo = _load(inventory)
    _known(topo, entity)
    found = topo.entity(entity)
    assert found is not None
    relations = [(r.src, str(r.kind), r.dst) for r in topo.relations(entity)]
    if as_json:
        print(json.dumps({"id": found.id, "kind": str(found.kind), "attrs": dict(found.attrs),
                          "relations": [{"src": s, "kind": k, "dst": d}
                                        for s, k, d in relations]}))
        return
    out.print(f"[bold]{found.id}[/bold] ({found.kind})", highlight=False)
    for key, value in sorted(found.attrs.items()):
        out.print(f"  {key} = {value}", highlight=False, markup=False)
    table = Table("from", "relation", "to")
    for src, kind, dst in relations:
        table.add_row(src, kind, dst)
    out.print(table)


@topo_app.command("blast-radius")
def blast_radius(entity: Annotated[str, typer.Argument(help="Entity id.")],
                 inventory: InventoryOption = DEFAULT_INVENTORY,
                 as_json: JsonOption = False) -> None:
    """Everything that fails, or is hurt, when ENTITY fails."""
    topo = _load(inventory)
    _known(topo, entity)
    hit = sorted(queries.blast_radius(topo, entity))
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
           inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """What ENTITIES depend on in common (switches, links, storage, racks, power)."""
    if len(entities) < 2:
        fail("give at least two entities")
    topo = _load(inventory)
    _known(topo, *entities)
    shared = queries.shared_dependencies(topo, entities)
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
         inventory: InventoryOption = DEFAULT_INVENTORY, as_json: JsonOption = False) -> None:
    """The shortest physical path (cables, switches, components) from A to B."""
    topo = _load(inventory)
    _known(topo, a, b)
    route = queries.path(topo, a, b)
    if as_json:
        print(json.dumps({"from": a, "to": b, "hops": max(0, len(route) - 1), "path": route}))
        return
    if not route:
        out.print(f"No physical path from {a} to {b}.")
        raise typer.Exit(1)
    out.print(" → ".join(route), highlight=False)
