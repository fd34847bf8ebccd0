"""Entity and relation kinds of the topology, their typed ids, and which way failure spreads.

Ids are ``kind:rest`` (DESIGN.md): ``node:gpu-a-017``, ``gpu:gpu-a-017/3``,
``nic:gpu-a-017/mlx5_2``, ``switch:leaf-12``, ``link:leaf-12/p7``, ``storage:sfs-1``,
``job:llm-70b-run3``, ``rank:llm-70b-run3/123``, ``pod:ns/name``. The first ``/``-separated
part of ``rest`` names the owner (the host of a GPU or NIC, the switch of a link).

Every relation is stored once, as a directed edge ``A -kind-> B``. Failure does not always
flow along the edge, so each kind also has an impact direction:

===========  ==============================================  ===============  ===========
relation     stored direction (examples)                     impact           flow
===========  ==============================================  ===============  ===========
contains     rack -> node, node -> gpu/nic,                  A fails, B hit   FORWARD
             storage -> volume
runs_on      rank -> gpu, pod -> node, job -> partition      B fails, A hit   BACKWARD
member_of    rank -> job, node -> partition                  A fails, B hit   FORWARD
             (a dead rank kills its job)
connects     spine -> link -> leaf -> link -> nic            A fails, B hit   FORWARD
             (stored from the fabric core outward)
mounts       job -> volume, node -> volume                   B fails, A hit   BACKWARD
depends_on   gpu -> its rail nic, rack -> power              B fails, A hit   BACKWARD
calls        service -> service                              B fails, A hit   BACKWARD
===========  ==============================================  ===============  ===========

``IMPACT`` holds the last column; ``blast_radius`` follows it, ``upstream`` runs it backwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class EntityKind(StrEnum):
    """What an entity is; the prefix of its id. Listed roughly coarse to fine: where two
    entities claim one lookup value (a node and its GPU both carry ``host.name``), the kind
    listed first keeps it (see ``Topology.index``)."""

    REGION = "region"
    CLUSTER = "cluster"
    RACK = "rack"
    POWER = "power"
    NODE = "node"
    GPU = "gpu"
    NVLINK = "nvlink"
    NVSWITCH = "nvswitch"
    NIC = "nic"
    SWITCH = "switch"
    PORT = "port"
    LINK = "link"
    STORAGE = "storage"
    VOLUME = "volume"
    MOUNT = "mount"
    PARTITION = "partition"
    JOB = "job"
    RANK = "rank"
    POD = "pod"
    CONTAINER = "container"
    SERVICE = "service"


class RelationKind(StrEnum):
    """How two entities relate; the kind of a directed edge ``src -> dst``."""

    CONTAINS = "contains"
    CONNECTS = "connects"
    MOUNTS = "mounts"
    RUNS_ON = "runs_on"
    MEMBER_OF = "member_of"
    DEPENDS_ON = "depends_on"
    CALLS = "calls"


class Flow(StrEnum):
    """Which end of a relation a failure travels to."""

    FORWARD = "forward"  # src fails -> dst is impacted
    BACKWARD = "backward"  # dst fails -> src is impacted


IMPACT: Final[Mapping[RelationKind, Flow]] = MappingProxyType({
    RelationKind.CONTAINS: Flow.FORWARD,
    RelationKind.RUNS_ON: Flow.BACKWARD,
    RelationKind.MEMBER_OF: Flow.FORWARD,
    RelationKind.CONNECTS: Flow.FORWARD,
    RelationKind.MOUNTS: Flow.BACKWARD,
    RelationKind.DEPENDS_ON: Flow.BACKWARD,
    RelationKind.CALLS: Flow.BACKWARD,
})
# The same table split in two, because traversals test edge kinds against sets in their loops.
IMPACT_FORWARD: Final = frozenset(k for k, flow in IMPACT.items() if flow is Flow.FORWARD)
IMPACT_BACKWARD: Final = frozenset(k for k, flow in IMPACT.items() if flow is Flow.BACKWARD)
# Relations that are cables, enclosures or power: what a physical path may cross.
PHYSICAL: Final = frozenset({RelationKind.CONTAINS, RelationKind.CONNECTS,
                             RelationKind.DEPENDS_ON})

_KINDS: Final[Mapping[str, EntityKind]] = {kind.value: kind for kind in EntityKind}
KIND_RANK: Final[Mapping[EntityKind, int]] = {kind: i for i, kind in enumerate(EntityKind)}


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity as it was at some time; ``valid_to`` is None while it still exists."""

    id: str
    kind: EntityKind
    attrs: Mapping[str, str]
    valid_from: float
    valid_to: float | None = None


@dataclass(frozen=True, slots=True)
class Relation:
    """One directed relation ``src -kind-> dst``."""

    src: str
    kind: RelationKind
    dst: str


def kind_of(entity_id: str) -> EntityKind:
    """The kind named by an id's prefix; ValueError naming the id if it has none we know."""
    prefix, sep, rest = entity_id.partition(":")
    if not sep or not rest:
        raise ValueError(f"entity id {entity_id!r} is not of the form 'kind:name'")
    kind = _KINDS.get(prefix)
    if kind is None:
        raise ValueError(f"entity id {entity_id!r} has unknown kind {prefix!r}; "
                         f"known: {', '.join(_KINDS)}")
    return kind


def entity_id(kind: EntityKind | str, *parts: str | int) -> str:
    """Build an id: ``entity_id(EntityKind.GPU, "gpu-a-017", 3) == "gpu:gpu-a-017/3"``."""
    try:
        known = EntityKind(kind)
    except ValueError:
        raise ValueError(f"unknown entity kind {kind!r}; known: {', '.join(_KINDS)}") from None
    texts = [str(part) for part in parts]
    if not texts or not all(texts):
        raise ValueError(f"an id of kind {known} needs non-empty parts, got {parts!r}")
    return f"{known}:{'/'.join(texts)}"


def parts_of(entity_id: str) -> tuple[str, ...]:
    """The ``/``-separated parts after the kind: ``("gpu-a-017", "3")`` for a GPU."""
    kind_of(entity_id)  # validates
    return tuple(entity_id.partition(":")[2].split("/"))


def owner_of(entity_id: str) -> str:
    """The first part of an id: the host of a GPU or NIC, the switch of a link or port."""
    return entity_id.partition(":")[2].partition("/")[0]


def normalize_pci(bus_id: str) -> str:
    """One spelling for a PCI address: NVML's ``00000000:18:00.0``, sysfs's ``0000:18:00.0``
    and lspci's ``18:00.0`` all become ``0000:18:00.0``, so sources agree on lookups."""
    text = bus_id.strip().lower()
    pieces = text.split(":")
    if len(pieces) == 2:
        pieces.insert(0, "0")
    if len(pieces) != 3:
        return text
    try:
        domain = int(pieces[0], 16)
    except ValueError:
        return text
    return f"{domain:04x}:{pieces[1]}:{pieces[2]}"
