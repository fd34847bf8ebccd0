"""Inventory snapshots: what one source (Slurm, Kubernetes, the fabric) says exists now.

Sources do not send diffs. Each sends, now and then, the whole of what it is authoritative
for, as an `InventorySnapshot` on the ``vigil.inventory`` topic; `apply_snapshot` makes the
graph agree with it at the snapshot's time, so a lost or repeated message heals itself with
the next one. Ownership needs no bookkeeping outside the graph (it survives save/load):

- an entity belongs to source ``S`` while it carries an attribute in S's namespace
  (``slurm.node``, ``k8s.pod.uid``): every entity a snapshot lists must carry one;
- applying replaces the ``S.*`` attributes of each listed entity, adds or overwrites the
  others it sends, and keeps what other sources set;
- an entity of one of the snapshot's `kinds` that belongs to ``S`` but is not listed is
  retired (its history stays for post-mortems), unless another live source still claims it
  (a node both Slurm and Kubernetes know): then it only loses its ``S.*`` attributes.
  Entities no source claims (an inventory file's) are never retired;
- for each listed entity, its outgoing relations that the snapshot manages (a relation kind
  towards an entity kind: ``runs_on`` a node, ``member_of`` a partition) are made exactly the
  listed ones, so a pod that moved gets its new ``runs_on`` and nothing else is touched; a
  relation whose other end does not exist is skipped and counted, not invented.

The wire form is JSON with a schema version, like the records in `vigil.records`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, Relation, RelationKind, kind_of

SCHEMA_VERSION: Final = 1
# Sources that publish snapshots; an entity carrying attributes of one of them is claimed.
LIVE_SOURCES: Final = ("slurm", "k8s")


class SnapshotError(ValueError):
    """A snapshot that cannot be applied or decoded; the message names the field."""


@dataclass(frozen=True, slots=True)
class EntityRecord:
    id: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InventorySnapshot:
    """Everything of `kinds` that `source` knows at `at`, and the relations out of it."""

    source: str  # "slurm", "k8s", ...: also the attribute namespace ("k8s." attrs)
    at: float
    kinds: frozenset[EntityKind]
    entities: tuple[EntityRecord, ...]
    relations: tuple[Relation, ...] = ()
    # (relation kind, target kind) pairs this source decides for its entities, besides those
    # its relations show: name one so that an empty list still retires stale relations.
    manages: frozenset[tuple[RelationKind, EntityKind]] = frozenset()

    @property
    def managed(self) -> frozenset[tuple[RelationKind, EntityKind]]:
        return self.manages | {(rel.kind, kind_of(rel.dst)) for rel in self.relations}

    def __post_init__(self) -> None:
        if not self.source or "." in self.source:
            raise SnapshotError(f"source {self.source!r} must be a non-empty name without '.'")
        prefix = f"{self.source}."
        for record in self.entities:
            kind = kind_of(record.id)
            if kind not in self.kinds:
                raise SnapshotError(f"entity {record.id!r}: kind {kind} is not among the "
                                    f"snapshot's kinds ({', '.join(sorted(self.kinds))})")
            if not any(key.startswith(prefix) for key in record.attrs):
                raise SnapshotError(f"entity {record.id!r} carries no {prefix}* attribute, so "
                                    f"nothing would say {self.source} owns it")
        listed = {record.id for record in self.entities}
        for rel in self.relations:
            if rel.src not in listed:
                raise SnapshotError(f"relation {rel.src!r} -{rel.kind}-> {rel.dst!r}: its "
                                    "source is not an entity of the snapshot")


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one `apply_snapshot` changed; `dangling` relations named a missing entity."""

    added: int = 0
    updated: int = 0
    retired: int = 0
    related: int = 0
    unrelated: int = 0
    dangling: int = 0


def apply_snapshot(topo: Topology, snapshot: InventorySnapshot) -> ApplyResult:
    """Make `topo` agree with `snapshot` at its time (see the module docstring)."""
    at, prefix = snapshot.at, f"{snapshot.source}."
    added = updated = 0
    listed: set[str] = set()
    for record in snapshot.entities:
        listed.add(record.id)
        current = topo.entity(record.id)
        if current is None:
            topo.add_entity(record.id, record.attrs, at=at)
            added += 1
            continue
        merged = {k: v for k, v in current.attrs.items() if not k.startswith(prefix)}
        merged.update(record.attrs)
        if merged != dict(current.attrs):
            topo.add_entity(record.id, merged, at=at)
            updated += 1
    # Retire before relating: a relation to an entity the source dropped is a stale one.
    others = tuple(f"{source}." for source in LIVE_SOURCES if source != snapshot.source)
    retired = 0
    for eid in [eid for kind in snapshot.kinds for eid in topo.entities(kind)
                if eid not in listed]:
        attrs = topo.entity(eid).attrs  # type: ignore[union-attr]  # listed by entities()
        if not any(key.startswith(prefix) for key in attrs):
            continue
        if any(key.startswith(others) for key in attrs):
            topo.add_entity(eid, {k: v for k, v in attrs.items() if not k.startswith(prefix)},
                            at=at)
            updated += 1
        else:
            topo.remove_entity(eid, at)
            retired += 1
    related, unrelated, dangling = _sync_relations(topo, listed, snapshot, at)
    return ApplyResult(added, updated, retired, related, unrelated, dangling)


def _sync_relations(topo: Topology, listed: set[str], snapshot: InventorySnapshot,
                    at: float) -> tuple[int, int, int]:
    wanted: dict[str, dict[str, RelationKind]] = {}
    for rel in snapshot.relations:
        wanted.setdefault(rel.src, {})[rel.dst] = rel.kind
    managed = snapshot.managed
    related = unrelated = dangling = 0
    for src in listed:
        targets = wanted.get(src, {})
        current = {rel.dst: rel.kind for rel in topo.relations(src)
                   if rel.src == src and (rel.kind, kind_of(rel.dst)) in managed}
        for dst, kind in current.items():
            if targets.get(dst) is not kind:
                topo.remove_relation(src, dst, at)
                unrelated += 1
        for dst, kind in targets.items():
            if current.get(dst) is kind:
                continue
            if not topo.exists(dst):
                dangling += 1
                continue
            topo.add_relation(src, kind, dst, at=at)
            related += 1
    return related, unrelated, dangling


# --- wire form --------------------------------------------------------------------------------
def encode_snapshot(snapshot: InventorySnapshot) -> bytes:
    return json.dumps({
        "schema": SCHEMA_VERSION,
        "source": snapshot.source,
        "at": snapshot.at,
        "kinds": sorted(snapshot.kinds),
        "entities": [{"id": e.id, "attrs": dict(e.attrs)} for e in snapshot.entities],
        "relations": [[r.src, str(r.kind), r.dst] for r in snapshot.relations],
        "manages": sorted([str(rel), str(kind)] for rel, kind in snapshot.manages),
    }, separators=(",", ":")).encode()


def decode_snapshot(payload: bytes) -> InventorySnapshot:
    """The snapshot in `payload`; SnapshotError naming the field that is wrong."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SnapshotError("not a JSON object")
    if data.get("schema") != SCHEMA_VERSION:
        raise SnapshotError(f"schema: {data.get('schema')!r} is not {SCHEMA_VERSION}")
    try:
        kinds = frozenset(EntityKind(k) for k in _list(data, "kinds"))
        entities = tuple(_entity(item, i) for i, item in enumerate(_list(data, "entities")))
        relations = tuple(_relation(item, i) for i, item in enumerate(_list(data, "relations")))
        at = data.get("at")
        if not isinstance(at, int | float) or isinstance(at, bool):
            raise SnapshotError(f"at: {at!r} is not a number")
        source = data.get("source")
        if not isinstance(source, str):
            raise SnapshotError(f"source: {source!r} is not a string")
        manages = frozenset(_managed_pair(item, i) for i, item in enumerate(_list(data, "manages")))
        return InventorySnapshot(source, float(at), kinds, entities, relations, manages)
    except ValueError as exc:  # unknown kinds, malformed ids; SnapshotError passes through
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(str(exc)) from None


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise SnapshotError(f"{key}: not a list")
    return value


def _entity(item: Any, i: int) -> EntityRecord:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise SnapshotError(f"entities[{i}]: needs an object with a string 'id'")
    attrs = item.get("attrs", {})
    if not isinstance(attrs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()):
        raise SnapshotError(f"entities[{i}].attrs: must map strings to strings")
    kind_of(item["id"])
    return EntityRecord(item["id"], attrs)


def _relation(item: Any, i: int) -> Relation:
    if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)):
        raise SnapshotError(f"relations[{i}]: needs [src, kind, dst] strings")
    src, kind, dst = item
    kind_of(src), kind_of(dst)
    try:
        return Relation(src, RelationKind(kind), dst)
    except ValueError:
        raise SnapshotError(f"relations[{i}]: unknown relation kind {kind!r}") from None


def _managed_pair(item: Any, i: int) -> tuple[RelationKind, EntityKind]:
    if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
        raise SnapshotError(f"manages[{i}]: needs [relation kind, entity kind] strings")
    try:
        return RelationKind(item[0]), EntityKind(item[1])
    except ValueError as exc:
        raise SnapshotError(f"manages[{i}]: {exc}") from None
