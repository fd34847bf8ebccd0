"""The topology graph: typed entities and relations on a networkx DiGraph, with their history.

Sized for a 100k-GPU cluster (over 1M entities, 2M relations), so storage is lean:

- node data is ``{"kind", "attrs", "valid_from"}`` plus ``"valid_to"`` only once retired;
  entities without attributes of one kind and start time share a single data dict, and
  relations of one kind and start time share one edge dict. A change (retirement) replaces
  the dict, never edits it, so sharing is invisible through this class.
- ids are interned, so the many adjacency entries naming one entity hold one string.
- nothing is deleted: ``remove_*`` stamps ``valid_to``, so a post-mortem can ask what the
  cluster looked like when an incident began (``view(at)``, and every ``at=`` argument).

``at=None`` means now (what has no ``valid_to``); ``at=t`` means valid_from <= t < valid_to.
Views handed out are read-only; their data dicts are the graph's own and must not be edited.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Required, TypedDict

import networkx as nx
from vigil.topology.hubs import HUB_DEGREE, HubIndex
from vigil.topology.model import (
    KIND_RANK,
    Entity,
    EntityKind,
    Relation,
    RelationKind,
    kind_of,
    normalize_pci,
    owner_of,
)


class _NodeData(TypedDict, total=False):
    kind: Required[EntityKind]
    attrs: Required[dict[str, str]]
    valid_from: Required[float]
    valid_to: float


class _EdgeData(TypedDict, total=False):
    kind: Required[RelationKind]
    valid_from: Required[float]
    valid_to: float


_NO_ATTRS: Final[dict[str, str]] = {}  # shared by every entity without attributes; never edited
_SNAPSHOT_FORMAT: Final = "vigil.topology/1"
_SHARED_CACHE_LIMIT: Final = 4096  # distinct (kind, time) data dicts kept for sharing


def _alive(data: _NodeData | _EdgeData, at: float | None) -> bool:
    if at is None:
        return "valid_to" not in data
    valid_to = data.get("valid_to")
    return data["valid_from"] <= at and (valid_to is None or at < valid_to)


class Topology:
    """Entities and relations of one cluster, with lookup indices for the ingest hot path."""

    # Attributes that sources use to name an entity (OTel resource attributes, dcgm-exporter
    # labels, Slurm and InfiniBand names): kept in dicts so a record finds its entity in O(1).
    INDEXED_ATTRS: ClassVar[tuple[str, ...]] = (
        "host.name", "Hostname", "UUID", "pci_bus_id", "k8s.pod.name", "k8s.node.name",
        "ib.device", "ib.guid",
    )
    # Unique only within one host (every HGX node has a GPU at 00000000:18:00.0 and an
    # mlx5_0), so these are indexed as "host|value".
    HOST_SCOPED_ATTRS: ClassVar[frozenset[str]] = frozenset({"pci_bus_id", "ib.device"})

    def __init__(self) -> None:
        self._graph: Any = nx.DiGraph()
        # We write the graph's dicts directly (see the module docstring), so networkx's
        # cache of converted graphs could go stale: switch it off, as networkx does itself.
        self._graph.__networkx_cache__ = None
        self._index: dict[str, dict[str, str]] = {name: {} for name in self.INDEXED_ATTRS}
        self._live_entities = 0
        self._live_relations = 0
        self._retirements = 0  # while 0 and nothing starts after `at`, views need no filter
        self._latest_start = float("-inf")
        self._shared_nodes: dict[tuple[EntityKind, float], _NodeData] = {}
        self._shared_edges: dict[tuple[RelationKind, float], _EdgeData] = {}
        self._hubs = HubIndex()

    # --- building ------------------------------------------------------------------------
    def add_entity(self, entity_id: str, attrs: Mapping[str, str] | None = None,
                   at: float = 0.0) -> None:
        """Add an entity, or replace a live one's attrs (an inventory upsert; its lifetime is
        kept). Re-adding a retired entity starts a new lifetime at `at`: one id holds one
        lifetime, so the earlier one is no longer visible to time-travel queries."""
        kind = kind_of(entity_id)
        entity_id = sys.intern(entity_id)
        stored = _NO_ATTRS
        if attrs:
            stored = dict(attrs)
            for key, value in stored.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError(f"entity {entity_id!r}: attribute {key!r} = {value!r} "
                                    "is not str -> str")
        graph = self._graph
        old: _NodeData | None = graph._node.get(entity_id)
        if old is not None and "valid_to" not in old:
            start = old["valid_from"]
            self._unindex(entity_id, old["attrs"])
        else:
            start = at
            self._live_entities += 1
            if old is None:
                graph._succ[entity_id] = {}
                graph._pred[entity_id] = {}
        if stored:
            graph._node[entity_id] = _NodeData(kind=kind, attrs=stored, valid_from=start)
            self._index_entity(entity_id, kind, stored)
        else:
            graph._node[entity_id] = self._shared_node(kind, start)
        self._latest_start = max(self._latest_start, start)

    def add_relation(self, src: str, kind: RelationKind, dst: str, at: float = 0.0) -> None:
        """Add ``src -kind-> dst``; both ends must exist now. One relation per ordered pair:
        adding it again is a no-op, with another kind a ValueError; adding a retired one
        again starts a new lifetime, as for entities."""
        kind = RelationKind(kind)
        src, dst = sys.intern(src), sys.intern(dst)
        for end in (src, dst):
            if not self.exists(end):
                state = "is retired" if end in self else "does not exist"
                raise KeyError(f"cannot relate {src!r} -{kind}-> {dst!r}: {end!r} {state}")
        graph = self._graph
        old: _EdgeData | None = graph._succ[src].get(dst)
        if old is not None and "valid_to" not in old:
            if old["kind"] is not kind:
                raise ValueError(f"{src!r} -> {dst!r} is already {old['kind']}, not {kind}")
            return
        data = self._shared_edge(kind, at)
        graph._succ[src][dst] = data
        graph._pred[dst][src] = data
        self._hubs.forget(src, dst)
        self._live_relations += 1
        self._latest_start = max(self._latest_start, at)

    def remove_entity(self, entity_id: str, at: float) -> None:
        """Retire an entity and its live relations at `at` (kept for history). Contained
        entities are not retired with it: a repair may move them. Retiring twice is a no-op."""
        data = self._node_data(entity_id)
        if "valid_to" in data:
            return
        if at < data["valid_from"]:
            raise ValueError(f"cannot retire {entity_id!r} at {at}: it began at "
                             f"{data['valid_from']}")
        graph = self._graph
        for dst in list(graph._succ[entity_id]):
            self._retire_edge(entity_id, dst, at)
        for src in list(graph._pred[entity_id]):
            self._retire_edge(src, entity_id, at)
        self._unindex(entity_id, data["attrs"])
        graph._node[entity_id] = _NodeData(kind=data["kind"], attrs=data["attrs"],
                                           valid_from=data["valid_from"], valid_to=at)
        self._live_entities -= 1
        self._retirements += 1

    def remove_relation(self, src: str, dst: str, at: float) -> None:
        """Retire the relation ``src -> dst`` at `at`. Retiring twice is a no-op."""
        data: _EdgeData | None = self._graph._succ.get(src, {}).get(dst)
        if data is None:
            raise KeyError(f"no relation {src!r} -> {dst!r}")
        if at < data["valid_from"]:
            raise ValueError(f"cannot retire {src!r} -> {dst!r} at {at}: it began at "
                             f"{data['valid_from']}")
        self._retire_edge(src, dst, at)

    # --- reading -------------------------------------------------------------------------
    def __contains__(self, entity_id: object) -> bool:
        """Whether the id was ever added, retired or not."""
        return entity_id in self._graph._node

    def __len__(self) -> int:
        """Entities that exist now."""
        return self._live_entities

    def relation_count(self, at: float | None = None) -> int:
        """Relations that exist at `at` (now: O(1); a past time walks every relation)."""
        if at is None:
            return self._live_relations
        return int(self.view(at).number_of_edges())

    def attr(self, entity_id: str, key: str) -> str | None:
        """One attribute of an entity, without building an `Entity` (hot-path reads)."""
        data: _NodeData | None = self._graph._node.get(entity_id)
        return None if data is None else data["attrs"].get(key)

    def exists(self, entity_id: str, at: float | None = None) -> bool:
        """Whether the entity existed at `at` (now: added and not retired)."""
        data: _NodeData | None = self._graph._node.get(entity_id)
        return data is not None and _alive(data, at)

    def entity(self, entity_id: str, at: float | None = None) -> Entity | None:
        """The entity as it was at `at`; None if it did not exist then (or ever)."""
        data: _NodeData | None = self._graph._node.get(entity_id)
        if data is None or not _alive(data, at):
            return None
        return Entity(id=entity_id, kind=data["kind"], attrs=MappingProxyType(data["attrs"]),
                      valid_from=data["valid_from"], valid_to=data.get("valid_to"))

    def entities(self, kind: EntityKind | None = None, at: float | None = None) -> Iterator[str]:
        """Ids of the entities (of one kind) that exist at `at`, in insertion order."""
        nodes: dict[str, _NodeData] = self._graph._node
        for node, data in nodes.items():
            if (kind is None or data["kind"] is kind) and _alive(data, at):
                yield node

    def relations(self, entity_id: str, at: float | None = None) -> list[Relation]:
        """The entity's relations at `at`, outgoing then incoming; KeyError if never added."""
        self._node_data(entity_id)
        if not self.exists(entity_id, at):
            return []
        graph = self._graph
        out: list[Relation] = []
        succ: dict[str, _EdgeData] = graph._succ[entity_id]
        for dst, data in succ.items():
            if _alive(data, at) and self.exists(dst, at):
                out.append(Relation(entity_id, data["kind"], dst))
        pred: dict[str, _EdgeData] = graph._pred[entity_id]
        for src, data in pred.items():
            if _alive(data, at) and self.exists(src, at):
                out.append(Relation(src, data["kind"], entity_id))
        return out

    def neighbors(self, entity_id: str, along: Collection[RelationKind] = (),
                  against: Collection[RelationKind] = (), at: float | None = None) -> list[str]:
        """One traversal step at `at`: the targets of the entity's relations whose kind is in
        `along`, then the sources of relations into it whose kind is in `against`. Kinds are
        tested before time, so a hub (the volume every node mounts) costs little; the entity's
        own existence is the caller's to check. Pass frozensets: they are tested per edge."""
        graph = self._graph
        if entity_id not in graph._node:
            raise KeyError(f"unknown entity {entity_id!r}")
        nodes: dict[str, _NodeData] = graph._node
        exact = self._retirements == 0 and (at is None or at >= self._latest_start)
        found: list[str] = []
        for adjacency, kinds in ((graph._succ, along), (graph._pred, against)):
            if not kinds:
                continue
            edges: dict[str, _EdgeData] = adjacency[entity_id]
            if len(edges) > HUB_DEGREE:
                groups = self._hubs.groups(entity_id, adjacency is graph._succ, edges)
                wanted = [other for kind in kinds for other in groups.get(kind, ())]
            else:
                wanted = [other for other, data in edges.items() if data["kind"] in kinds]
            found += wanted if exact else [
                other for other in wanted
                if _alive(edges[other], at) and _alive(nodes[other], at)]
        return found

    def view(self, at: float | None = None,
             kinds: Collection[RelationKind] | None = None) -> Any:
        """A read-only ``nx.DiGraph`` view of what existed at `at`, optionally keeping only
        relations of the given kinds. Node data: kind, attrs, valid_from[, valid_to]; edge
        data: kind, valid_from[, valid_to]."""
        graph = self._graph
        exact = self._retirements == 0 and (at is None or at >= self._latest_start)
        if exact and kinds is None:
            # Nothing to hide: skip the per-lookup filter calls that dominate traversals.
            return nx.graphviews.generic_graph_view(graph)
        nodes: dict[str, _NodeData] = graph._node
        succ: dict[str, dict[str, _EdgeData]] = graph._succ
        wanted = frozenset(RelationKind(k) for k in kinds) if kinds is not None else None

        def node_ok(node: str) -> bool:
            return _alive(nodes[node], at)

        def edge_ok(src: str, dst: str) -> bool:
            data = succ[src][dst]
            return (wanted is None or data["kind"] in wanted) and (exact or _alive(data, at))

        return nx.subgraph_view(graph, filter_node=nx.filters.no_filter if exact else node_ok,
                                filter_edge=edge_ok)

    # --- lookup indices ------------------------------------------------------------------
    def index(self, attr: str, value: str) -> str | None:
        """The live entity named by ``attr = value``; for HOST_SCOPED_ATTRS pass
        ``"host|value"``. Where several claim a value, the coarser kind (earlier in
        EntityKind) keeps it, then the latest added: ``host.name`` finds the node, not the
        GPUs that carry the same resource attribute."""
        table = self._index.get(attr)
        if table is None:
            raise ValueError(f"attribute {attr!r} is not indexed; indexed: "
                             f"{', '.join(self.INDEXED_ATTRS)}")
        if attr == "pci_bus_id":
            host, _, pci = value.rpartition("|")
            value = f"{host}|{normalize_pci(pci)}"
        return table.get(value)

    def gpu_by_pci(self, host: str, pci_bus_id: str) -> str | None:
        """The GPU at `pci_bus_id` on `host`, in any spelling of the PCI address."""
        found = self._index["pci_bus_id"].get(f"{host}|{normalize_pci(pci_bus_id)}")
        return found if found is not None and kind_of(found) is EntityKind.GPU else None

    def _index_keys(self, entity_id: str, attrs: Mapping[str, str]) -> Iterator[tuple[str, str]]:
        for attr, value in attrs.items():
            if attr not in self._index:
                continue
            if attr in self.HOST_SCOPED_ATTRS:
                host = attrs.get("host.name") or attrs.get("Hostname") or owner_of(entity_id)
                if attr == "pci_bus_id":
                    value = normalize_pci(value)
                value = f"{host}|{value}"
            yield attr, value

    def _index_entity(self, entity_id: str, kind: EntityKind, attrs: Mapping[str, str]) -> None:
        for attr, key in self._index_keys(entity_id, attrs):
            table = self._index[attr]
            holder = table.get(key)
            if holder is None or KIND_RANK[kind] <= KIND_RANK[kind_of(holder)]:
                table[key] = entity_id

    def _unindex(self, entity_id: str, attrs: Mapping[str, str]) -> None:
        for attr, key in self._index_keys(entity_id, attrs):
            table = self._index[attr]
            if table.get(key) == entity_id:
                del table[key]

    # --- snapshots -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a pickle snapshot, atomically (a reader never sees half a file)."""
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        state = {"format": _SNAPSHOT_FORMAT, "graph": self._graph, "index": self._index,
                 "live": (self._live_entities, self._live_relations),
                 "retirements": self._retirements, "latest_start": self._latest_start}
        with partial.open("wb") as out:
            pickle.dump(state, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Topology:
        """Read a snapshot written by `save`. It is a pickle: load only trusted files."""
        enabled = gc.isenabled()
        # Unpickling creates millions of dicts; the cyclic collector would rescan them over
        # and over while nothing can be garbage yet, tripling the load time.
        gc.disable()
        try:
            with Path(path).open("rb") as source:
                state = pickle.load(source)  # trusted snapshots only, as documented
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
                TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable topology snapshot ({exc})") from exc
        finally:
            if enabled:
                gc.enable()
        if not isinstance(state, dict) or state.get("format") != _SNAPSHOT_FORMAT:
            raise ValueError(f"{path}: not a topology snapshot of format {_SNAPSHOT_FORMAT}")
        topo = cls()
        topo._graph = state["graph"]
        topo._index = state["index"]
        topo._live_entities, topo._live_relations = state["live"]
        topo._retirements = state["retirements"]
        topo._latest_start = state["latest_start"]
        return topo

    # --- internals -----------------------------------------------------------------------
    def _node_data(self, entity_id: str) -> _NodeData:
        data: _NodeData | None = self._graph._node.get(entity_id)
        if data is None:
            raise KeyError(f"unknown entity {entity_id!r}")
        return data

    def _shared_node(self, kind: EntityKind, start: float) -> _NodeData:
        data = self._shared_nodes.get((kind, start))
        if data is None:
            if len(self._shared_nodes) >= _SHARED_CACHE_LIMIT:
                self._shared_nodes.clear()  # a stream of distinct times: sharing buys nothing
            data = self._shared_nodes[(kind, start)] = _NodeData(kind=kind, attrs=_NO_ATTRS,
                                                                 valid_from=start)
        return data

    def _shared_edge(self, kind: RelationKind, start: float) -> _EdgeData:
        data = self._shared_edges.get((kind, start))
        if data is None:
            if len(self._shared_edges) >= _SHARED_CACHE_LIMIT:
                self._shared_edges.clear()
            data = self._shared_edges[(kind, start)] = _EdgeData(kind=kind, valid_from=start)
        return data

    def _retire_edge(self, src: str, dst: str, at: float) -> None:
        graph = self._graph
        data: _EdgeData = graph._succ[src][dst]
        if "valid_to" in data:
            return
        # Clamped: when an entity is retired by an event older than one of its relations,
        # that relation existed for no time rather than ending before it began.
        retired = _EdgeData(kind=data["kind"], valid_from=data["valid_from"],
                            valid_to=max(at, data["valid_from"]))
        graph._succ[src][dst] = retired
        graph._pred[dst][src] = retired
        self._live_relations -= 1
        self._retirements += 1
