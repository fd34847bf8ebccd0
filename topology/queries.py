"""Topology queries: what a failure hits, what an entity depends on, paths, placement, peers.

Pure functions of a Topology and a time (``at=None``: now, ``at=t``: as the cluster was at t),
so correlation and root-cause ranking can ask about the moment an incident began. Impact
follows ``model.IMPACT``. An id that was never added, or did not exist at `at`, is a KeyError
that names it.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Final

import networkx as nx
from networkx.classes.coreviews import UnionAtlas
from vigil.topology.graph import Topology
from vigil.topology.model import (
    IMPACT_BACKWARD,
    IMPACT_FORWARD,
    PHYSICAL,
    EntityKind,
    RelationKind,
    kind_of,
)

# What an alert on several entities most often has in common when the cause is shared.
DEPENDENCY_KINDS: Final[tuple[EntityKind, ...]] = (
    EntityKind.SWITCH, EntityKind.LINK, EntityKind.STORAGE, EntityKind.VOLUME,
    EntityKind.RACK, EntityKind.POWER, EntityKind.NVSWITCH,
)
_CONTAINS: Final = frozenset({RelationKind.CONTAINS})
_RUNS_ON: Final = frozenset({RelationKind.RUNS_ON})
_MEMBER_OF: Final = frozenset({RelationKind.MEMBER_OF})
_NOTHING: Final[frozenset[RelationKind]] = frozenset()
_PARALLEL_COORDS: Final = ("dp", "pp", "tp")
_NODE_PREFIX: Final = f"{EntityKind.NODE}:"
_RANK_PREFIX: Final = f"{EntityKind.RANK}:"


def blast_radius(topo: Topology, entity: str, at: float | None = None) -> set[str]:
    """Everything impacted, directly or transitively, if `entity` fails (itself excluded)."""
    _check(topo, [entity], at)
    hit = _reach(topo, [entity], IMPACT_FORWARD, IMPACT_BACKWARD, at)
    hit.discard(entity)
    return hit


def upstream(topo: Topology, entity: str, at: float | None = None) -> set[str]:
    """Everything whose failure would impact `entity` or what it contains: a node's upstream
    holds its rack and power, its NICs' links and switches, and the volumes it mounts. The
    entity and its contained descendants are not listed."""
    _check(topo, [entity], at)
    return _upstream(topo, entity, at)


def shared_dependencies(
    topo: Topology, entities: Iterable[str], kinds: Collection[EntityKind] = DEPENDENCY_KINDS,
    at: float | None = None,
) -> list[tuple[str, int]]:
    """Upstream entities of `kinds` common to at least two of `entities`, as (id, how many of
    them it covers), most covering first, then by id."""
    members = list(dict.fromkeys(entities))
    _check(topo, members, at)
    wanted = frozenset(EntityKind(kind) for kind in kinds)
    coverage: Counter[str] = Counter()
    for member in members:
        coverage.update(dep for dep in _upstream(topo, member, at) if kind_of(dep) in wanted)
    ranked = [(dep, count) for dep, count in coverage.items() if count >= 2]
    ranked.sort(key=lambda item: (-item[1], item[0]))
    return ranked


def path(topo: Topology, a: str, b: str, at: float | None = None) -> list[str]:
    """A shortest path from `a` to `b` over physical relations (contains, connects,
    depends_on) in either direction; [] when there is none. Among equally short paths any
    one may come back.

    Enclosures (region, cluster, rack, power feed, partition) are not conduits: two GPUs in
    different racks talk over cables and switches, not "through" the cluster that contains
    both, so the path never passes through one unless it starts or ends there."""
    _check(topo, [a, b], at)
    ends = {a, b}
    view = nx.subgraph_view(topo.view(at, PHYSICAL),
                            filter_node=lambda n: n in ends or kind_of(n) not in ENCLOSURES)
    try:
        # Bidirectional: on a 1M-entity fabric it meets in the middle after a few hops
        # instead of flooding every leaf behind a spine.
        return list(nx.bidirectional_shortest_path(_undirected(view), a, b))
    except nx.NetworkXNoPath:
        return []


ENCLOSURES = frozenset({EntityKind.REGION, EntityKind.CLUSTER, EntityKind.RACK,
                        EntityKind.POWER, EntityKind.PARTITION})


def job_placement(topo: Topology, job: str, at: float | None = None) -> dict[str, list[str]]:
    """Node id -> the job's ranks on it, both sorted (ranks by number). A rank placed on no
    node at `at` is left out."""
    _check(topo, [job], at)
    _require_kind(job, EntityKind.JOB)
    placement: dict[str, list[str]] = {}
    for rank in _ranks_of(topo, job, at):
        host = _host_of(topo, rank, at)
        if host is not None:
            placement.setdefault(host, []).append(rank)
    return {node: sorted(ranks, key=_rank_order) for node, ranks in sorted(placement.items())}


def peers(topo: Topology, entity: str, at: float | None = None) -> list[str]:
    """The nodes hosting the data-parallel peers of a rank, or of the ranks on a node: ranks
    of the same job with the same pipeline ("pp") and tensor ("tp") coordinates and another
    "dp". Sorted, without the entity's own node. The peer-comparison detector judges a node
    against exactly these, because they run the same code on the same shapes."""
    _check(topo, [entity], at)
    kind = kind_of(entity)
    if kind is EntityKind.RANK:
        own_ranks = [entity]
        host = _host_of(topo, entity, at)
        own_nodes = {host} if host is not None else set()
    elif kind is EntityKind.NODE:
        own_ranks = _ranks_on(topo, entity, at)
        own_nodes = {entity}
    else:
        raise ValueError(f"peers needs a rank or a node, not {entity!r}")
    if not own_ranks:
        return []
    job = _only_job(topo, entity, own_ranks, at)
    own_dps: dict[tuple[str, str], set[str]] = {}
    for rank in own_ranks:
        dp, pp, tp = _coords(topo, rank, at)
        own_dps.setdefault((pp, tp), set()).add(dp)
    mine = set(own_ranks)
    hosts: set[str] = set()
    for rank in _ranks_of(topo, job, at):
        if rank in mine:
            continue
        dp, pp, tp = _coords(topo, rank, at)
        if own_dps.get((pp, tp), set()) - {dp}:
            peer_host = _host_of(topo, rank, at)
            if peer_host is not None:
                hosts.add(peer_host)
    return sorted(hosts - own_nodes)


# --- helpers ---------------------------------------------------------------------------------
def _check(topo: Topology, entities: Iterable[str], at: float | None) -> None:
    for entity in entities:
        if not topo.exists(entity, at):
            if entity in topo:
                when = "now" if at is None else f"at t={at}"
                raise KeyError(f"entity {entity!r} did not exist {when}")
            raise KeyError(f"unknown entity {entity!r}")


def _require_kind(entity: str, kind: EntityKind) -> None:
    if kind_of(entity) is not kind:
        raise ValueError(f"expected an entity of kind {kind}, got {entity!r}")


def _reach(topo: Topology, seeds: Iterable[str], along: frozenset[RelationKind],
           against: frozenset[RelationKind], at: float | None) -> set[str]:
    """Breadth-first closure of `seeds` (included) along out-edges of the kinds in `along`
    and against in-edges of the kinds in `against`."""
    seen = set(seeds)
    queue = deque(seen)
    while queue:
        for nbr in topo.neighbors(queue.popleft(), along, against, at):
            if nbr not in seen:
                seen.add(nbr)
                queue.append(nbr)
    return seen


def _upstream(topo: Topology, entity: str, at: float | None) -> set[str]:
    own = _reach(topo, [entity], _CONTAINS, _NOTHING, at)
    # Impact run backwards: against forward-flowing edges, along backward-flowing ones.
    return _reach(topo, own, IMPACT_BACKWARD, IMPACT_FORWARD, at) - own


def _host_of(topo: Topology, entity: str, at: float | None) -> str | None:
    """The node a workload runs on: up runs_on edges (rank -> gpu, pod -> node) and up
    contains edges (node -> gpu) until a node is met."""
    if entity.startswith(_NODE_PREFIX):
        return entity
    # Fast path: what a workload runs on usually names its host (GPUs carry host.name).
    for nbr in topo.neighbors(entity, _RUNS_ON, (), at):
        host = topo.attr(nbr, "host.name")
        if host is not None and topo.exists(f"node:{host}", at):
            return f"node:{host}"
    seen = {entity}
    queue = deque([entity])
    while queue:
        for nbr in topo.neighbors(queue.popleft(), _RUNS_ON, _CONTAINS, at):
            if kind_of(nbr) is EntityKind.NODE:
                return nbr
            if nbr not in seen:
                seen.add(nbr)
                queue.append(nbr)
    return None


def _ranks_on(topo: Topology, node: str, at: float | None) -> list[str]:
    """Ranks running on `node` or on what it contains (its GPUs, its pods)."""
    reached = _reach(topo, [node], _CONTAINS, _RUNS_ON, at)
    return sorted((e for e in reached if kind_of(e) is EntityKind.RANK), key=_natural)


def _ranks_of(topo: Topology, job: str, at: float | None) -> list[str]:
    return [member for member in topo.neighbors(job, against=_MEMBER_OF, at=at)
            if member.startswith(_RANK_PREFIX)]


def _only_job(topo: Topology, entity: str, ranks: list[str], at: float | None) -> str:
    jobs = {group for rank in ranks for group in topo.neighbors(rank, _MEMBER_OF, at=at)
            if kind_of(group) is EntityKind.JOB}
    if len(jobs) != 1:
        found = ", ".join(sorted(jobs)) or "none"
        raise ValueError(f"peers of {entity!r} need ranks of exactly one job; found {found}")
    return jobs.pop()


def _coords(topo: Topology, rank: str, at: float | None) -> tuple[str, str, str]:
    record = topo.entity(rank, at)
    attrs = record.attrs if record is not None else {}
    missing = [name for name in _PARALLEL_COORDS if name not in attrs]
    if missing:
        raise ValueError(f"rank {rank!r} lacks parallel coordinate(s) {', '.join(missing)}")
    return attrs["dp"], attrs["pp"], attrs["tp"]


class _EitherWay(Mapping[str, Any]):
    """A directed view's successors and predecessors as one undirected adjacency. networkx's
    own ``to_undirected(as_view=True)`` checks every node's key sets when it is built: 1.5 s
    per query on a 1M-entity graph, for a search that touches a few thousand."""

    def __init__(self, view: Any) -> None:
        self._succ, self._pred = view._succ, view._pred

    def __getitem__(self, node: str) -> Any:
        return UnionAtlas(self._succ[node], self._pred[node])

    def __iter__(self) -> Iterator[str]:
        return iter(self._succ)

    def __len__(self) -> int:
        return len(self._succ)


def _undirected(view: Any) -> Any:
    # Built as networkx builds its own graph views (graphviews.generic_graph_view).
    graph = nx.freeze(nx.Graph())
    graph._graph = view
    graph.graph = view.graph
    graph._node = view._node
    graph._adj = _EitherWay(view)
    return graph


def _rank_order(rank: str) -> tuple[str, int]:
    """Rank 2 before rank 10, without `_natural`'s regex: a job's thousands of ranks are
    sorted on every placement query. An id that does not end in a number sorts by itself."""
    head, _, number = rank.rpartition("/")
    return (head, int(number)) if number.isdigit() else (rank, -1)


def _natural(entity_id: str) -> tuple[str | int, ...]:
    """Sort key that puts rank 2 before rank 10."""
    return tuple(int(piece) if piece.isdigit() else piece
                 for piece in re.split(r"(\d+)", entity_id))
