"""Inventory checks the schema cannot express, and problems written as ``FILE:LINE: key: message``.

A problem's place is a pydantic-style location (``("racks", 0, "nodes", 1, "name")``); the
line is found by walking the same path through the YAML node tree (`yaml.compose`), whose
nodes remember where they were written. JSON is YAML, so JSON files get lines too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from vigil.topology.inventory import Inventory, Job, Node, Switch

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong at `loc`; `first` is where the same name was first written, for duplicates."""

    loc: Loc
    message: str
    first: Loc | None = None


def render(path: Path, root: yaml.Node | None, problems: Iterable[Problem]) -> list[str]:
    """The problems as ``FILE:LINE: key.path: message`` lines, in the order of the file.

    `root` is the file's YAML node tree; without it, problems have no line.
    """
    located = [_format(path, root, problem) for problem in problems]
    return [text for _, text in sorted(located, key=lambda item: item[0])]  # stable


def _format(path: Path, root: yaml.Node | None, problem: Problem) -> tuple[int, str]:
    """(line or 0, text) of one problem."""
    key, line = locate(root, problem.loc)
    where = f"{path}:{line}" if line is not None else str(path)
    message = problem.message
    if problem.first is not None:
        first_key, first_line = locate(root, problem.first)
        message += f" (first at line {first_line})" if first_line else f" (first at {first_key})"
    return line or 0, f"{where}: {key}: {message}" if key else f"{where}: {message}"


def locate(root: yaml.Node | None, loc: Loc) -> tuple[str, int | None]:
    """The readable key path of `loc` (``racks[0].nodes[1].name``) and its 1-based line.

    The line is that of the deepest part of `loc` written in the file: the key itself, or,
    for a key that is missing, the mapping that should hold it.
    """
    key = ""
    node = root
    line = None if root is None else root.start_mark.line + 1
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
            if isinstance(node, yaml.SequenceNode) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                node = None
            continue
        key += f".{part}" if key else part
        if not isinstance(node, yaml.MappingNode):
            node = None
            continue
        # The last one: YAML loaders keep the last of keys written twice.
        matches = [(k, v) for k, v in node.value if k.value == part]
        if matches:
            line = matches[-1][0].start_mark.line + 1
            node = matches[-1][1]
        else:
            node = None
    return key, line


def semantic_problems(inventory: Inventory) -> list[Problem]:
    """Names that must be unique and are not, and references to things the file lacks."""
    problems: list[Problem] = []
    switches: dict[str, Switch] = {}
    for switch in inventory.switches:
        switches.setdefault(switch.name, switch)
    nodes: dict[str, Node] = {}
    for rack in inventory.racks:
        for node in rack.nodes:
            nodes.setdefault(node.name, node)
    power = {feed.name for feed in inventory.power}

    problems += _duplicates("power feed", ((feed.name, ("power", i, "name"))
                                           for i, feed in enumerate(inventory.power)))
    problems += _duplicates("switch", ((switch.name, ("switches", i, "name"))
                                       for i, switch in enumerate(inventory.switches)))
    problems += _duplicates("rack", ((rack.name, ("racks", i, "name"))
                                     for i, rack in enumerate(inventory.racks)))
    problems += _duplicates("node", ((node.name, ("racks", i, "nodes", j, "name"))
                                     for i, rack in enumerate(inventory.racks)
                                     for j, node in enumerate(rack.nodes)))
    problems += _duplicates("storage system", ((storage.name, ("storage", i, "name"))
                                               for i, storage in enumerate(inventory.storage)))
    problems += _duplicates("job", ((job.name, ("jobs", i, "name"))
                                    for i, job in enumerate(inventory.jobs)))
    problems += _duplicates("cable to port", (
        (f"{nic.leaf}/{nic.port}", ("racks", i, "nodes", j, "nics", k, "port"))
        for i, rack in enumerate(inventory.racks)
        for j, node in enumerate(rack.nodes)
        for k, nic in enumerate(node.nics)))

    for i, switch in enumerate(inventory.switches):
        problems += _uplink_problems(("switches", i), switch, switches)
    for i, rack in enumerate(inventory.racks):
        if rack.power is not None and rack.power not in power:
            problems.append(Problem(("racks", i, "power"), f"unknown power feed {rack.power!r}"))
        for j, node in enumerate(rack.nodes):
            problems += _node_problems(("racks", i, "nodes", j), node, switches)
    volumes: set[str] = set()
    for i, storage in enumerate(inventory.storage):
        problems += _duplicates("volume", ((volume.name, ("storage", i, "volumes", j, "name"))
                                           for j, volume in enumerate(storage.volumes)))
        for j, volume in enumerate(storage.volumes):
            volumes.add(f"{storage.name}/{volume.name}")
            for k, name in enumerate(volume.mounted_by):
                if name != "*" and name not in nodes:
                    loc = ("storage", i, "volumes", j, "mounted_by", k)
                    problems.append(Problem(loc, f"unknown node {name!r}"))
    for i, job in enumerate(inventory.jobs):
        problems += _job_problems(("jobs", i), job, nodes, volumes)
    return problems


def _duplicates(what: str, names: Iterable[tuple[str, Loc]]) -> list[Problem]:
    first: dict[str, Loc] = {}
    problems = []
    for name, loc in names:
        if name in first:
            problems.append(Problem(loc, f"duplicate {what} {name!r}", first[name]))
        else:
            first[name] = loc
    return problems


def _uplink_problems(loc: Loc, switch: Switch, switches: dict[str, Switch]) -> list[Problem]:
    if switch.tier == "spine" and switch.uplinks:
        return [Problem((*loc, "uplinks"), "only leaf switches have uplinks")]
    problems = _duplicates("uplink", ((spine, (*loc, "uplinks", k))
                                      for k, spine in enumerate(switch.uplinks)))
    for k, spine in enumerate(switch.uplinks):
        target = switches.get(spine)
        if target is None:
            problems.append(Problem((*loc, "uplinks", k), f"unknown spine switch {spine!r}"))
        elif target.tier != "spine":
            problems.append(Problem((*loc, "uplinks", k), f"{spine!r} is a leaf, not a spine"))
    return problems


def _node_problems(loc: Loc, node: Node, switches: dict[str, Switch]) -> list[Problem]:
    problems = []
    if not isinstance(node.gpus, int):
        problems += _duplicates("GPU index", ((str(gpu.index), (*loc, "gpus", k, "index"))
                                              for k, gpu in enumerate(node.gpus)))
    problems += _duplicates("NIC", ((nic.name, (*loc, "nics", k, "name"))
                                    for k, nic in enumerate(node.nics)))
    problems += _duplicates("rail", ((str(nic.rail), (*loc, "nics", k, "rail"))
                                     for k, nic in enumerate(node.nics) if nic.rail is not None))
    for k, nic in enumerate(node.nics):
        leaf = switches.get(nic.leaf)
        if leaf is None:
            problems.append(Problem((*loc, "nics", k, "leaf"), f"unknown leaf switch {nic.leaf!r}"))
        elif leaf.tier != "leaf":
            problems.append(Problem((*loc, "nics", k, "leaf"),
                                    f"{nic.leaf!r} is a spine; NICs are cabled to leaves"))
    return problems


def _job_problems(loc: Loc, job: Job, nodes: dict[str, Node], volumes: set[str]) -> list[Problem]:
    problems = _duplicates("node", ((name, (*loc, "nodes", k))
                                    for k, name in enumerate(job.nodes)))
    for k, name in enumerate(job.nodes):
        node = nodes.get(name)
        if node is None:
            problems.append(Problem((*loc, "nodes", k), f"unknown node {name!r}"))
        elif len(node.gpu_list()) < job.ranks_per_node:
            problems.append(Problem((*loc, "ranks_per_node"), (
                f"{name!r} has {len(node.gpu_list())} GPUs, fewer than ranks_per_node "
                f"({job.ranks_per_node})")))
    group = job.tensor_parallel * job.pipeline_parallel
    if job.world_size % group:
        problems.append(Problem((*loc, "ranks_per_node"), (
            f"{len(job.nodes)} nodes x {job.ranks_per_node} ranks_per_node = {job.world_size} "
            f"ranks, not a multiple of tensor_parallel x pipeline_parallel = {group}")))
    if job.volume is not None and job.volume not in volumes:
        problems.append(Problem((*loc, "volume"), f"unknown volume {job.volume!r}"))
    return problems
