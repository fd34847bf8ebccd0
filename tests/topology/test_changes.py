"""Inventory snapshots: applying what one source says, and their wire form."""

from __future__ import annotations

import pytest
from vigil.topology.changes import (
    EntityRecord,
    InventorySnapshot,
    SnapshotError,
    apply_snapshot,
    decode_snapshot,
    encode_snapshot,
)
from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, Relation, RelationKind

NODE, POD = EntityKind.NODE, EntityKind.POD
RUNS_ON = RelationKind.RUNS_ON


def pod(name: str, node: str | None) -> tuple[EntityRecord, list[Relation]]:
    record = EntityRecord(f"pod:train/{name}", {"k8s.pod.name": name})
    rels = [Relation(record.id, RUNS_ON, f"node:{node}")] if node else []
    return record, rels


def k8s(at: float, nodes: list[str], pods: list[tuple[str, str | None]]) -> InventorySnapshot:
    entities = [EntityRecord(f"node:{n}", {"k8s.node.name": n, "host.name": n}) for n in nodes]
    relations: list[Relation] = []
    for name, node in pods:
        record, rels = pod(name, node)
        entities.append(record)
        relations += rels
    return InventorySnapshot("k8s", at, frozenset({NODE, POD}), tuple(entities),
                             tuple(relations), frozenset({(RUNS_ON, NODE)}))


@pytest.fixture
def topo() -> Topology:
    """Two nodes from an inventory file (no k8s attrs) and a GPU inside one."""
    t = Topology()
    t.add_entity("node:a", {"host.name": "a", "rack": "r1"})
    t.add_entity("node:b", {"host.name": "b"})
    t.add_entity("gpu:a/0", {"UUID": "GPU-1"})
    t.add_relation("node:a", RelationKind.CONTAINS, "gpu:a/0")
    return t


def test_first_snapshot_adds_pods_and_merges_node_attrs(topo: Topology) -> None:
    result = apply_snapshot(topo, k8s(10.0, ["a", "b"], [("p0", "a"), ("p1", "b")]))
    assert (result.added, result.updated, result.related) == (2, 2, 2)
    assert dict(topo.entity("node:a").attrs) == {  # type: ignore[union-attr]
        "host.name": "a", "rack": "r1", "k8s.node.name": "a"}
    assert topo.neighbors("pod:train/p0", along=frozenset({RUNS_ON})) == ["node:a"]
    assert topo.index("k8s.pod.name", "p1") == "pod:train/p1"


def test_a_moved_pod_changes_node_and_history_keeps_the_old_one(topo: Topology) -> None:
    apply_snapshot(topo, k8s(10.0, ["a", "b"], [("p0", "a")]))
    result = apply_snapshot(topo, k8s(20.0, ["a", "b"], [("p0", "b")]))
    assert (result.related, result.unrelated) == (1, 1)
    assert topo.neighbors("pod:train/p0", along=frozenset({RUNS_ON})) == ["node:b"]
    assert topo.neighbors("pod:train/p0", along=frozenset({RUNS_ON}), at=15.0) == ["node:a"]
    # what the inventory file said is not the source's to change
    assert topo.exists("gpu:a/0") and topo.relations("gpu:a/0")


def test_what_the_source_no_longer_lists_is_retired_and_only_that(topo: Topology) -> None:
    apply_snapshot(topo, k8s(10.0, ["a", "b"], [("p0", "a"), ("p1", "b")]))
    result = apply_snapshot(topo, k8s(30.0, ["a"], [("p0", "a")]))
    assert result.retired == 2  # node:b (k8s had claimed it) and pod p1
    assert not topo.exists("pod:train/p1") and topo.exists("pod:train/p1", at=20.0)
    assert not topo.exists("node:b")
    assert topo.exists("node:a") and topo.exists("gpu:a/0")


def test_an_entity_no_source_claims_is_never_retired(topo: Topology) -> None:
    apply_snapshot(topo, k8s(10.0, [], []))
    assert topo.exists("node:a") and topo.exists("node:b")


def test_a_pod_on_an_unknown_node_is_added_without_inventing_the_node(topo: Topology) -> None:
    snapshot = InventorySnapshot("k8s", 5.0, frozenset({POD}), (pod("p9", "ghost")[0],),
                                 tuple(pod("p9", "ghost")[1]))
    result = apply_snapshot(topo, snapshot)
    assert (result.added, result.dangling) == (1, 1)
    assert "node:ghost" not in topo


def test_an_emptied_relation_list_still_retires_what_the_source_manages(topo: Topology) -> None:
    apply_snapshot(topo, k8s(10.0, ["a"], [("p0", "a")]))
    apply_snapshot(topo, k8s(20.0, ["a"], [("p0", None)]))  # pending again: no node
    assert topo.neighbors("pod:train/p0", along=frozenset({RUNS_ON})) == []


def test_snapshot_rules_are_checked_when_built() -> None:
    with pytest.raises(SnapshotError, match="carries no k8s"):
        InventorySnapshot("k8s", 0.0, frozenset({NODE}), (EntityRecord("node:a", {"x": "1"}),))
    with pytest.raises(SnapshotError, match="not among the snapshot's kinds"):
        InventorySnapshot("k8s", 0.0, frozenset({NODE}),
                          (EntityRecord("pod:a/b", {"k8s.pod.name": "b"}),))
    with pytest.raises(SnapshotError, match="not an entity of the snapshot"):
        InventorySnapshot("k8s", 0.0, frozenset({NODE}), (),
                          (Relation("node:a", RUNS_ON, "node:b"),))
    with pytest.raises(SnapshotError, match=r"without '\.'"):
        InventorySnapshot("k8s.io", 0.0, frozenset(), ())


def test_wire_form_round_trips() -> None:
    snapshot = k8s(12.5, ["a"], [("p0", "a")])
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot


@pytest.mark.parametrize(("payload", "names"), [
    (b"\xff", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schema": 9}', "schema"),
    (b'{"schema": 1, "source": "k8s", "at": "now", "kinds": []}', "at"),
    (b'{"schema": 1, "source": "k8s", "at": 1, "kinds": ["planet"]}', "planet"),
    (b'{"schema": 1, "source": "k8s", "at": 1, "kinds": ["node"], '
     b'"entities": [{"id": "node:a", "attrs": {"k8s.x": 1}}]}', "entities[0].attrs"),
    (b'{"schema": 1, "source": "k8s", "at": 1, "kinds": ["node"], '
     b'"relations": [["node:a", "likes", "node:b"]]}', "likes"),
    (b'{"schema": 1, "source": "k8s", "at": 1, "kinds": [], "manages": [["runs_on"]]}',
     "manages[0]"),
])
def test_bad_wire_form_names_the_field(payload: bytes, names: str) -> None:
    with pytest.raises(SnapshotError, match=names.replace("[", r"\[").replace("]", r"\]")):
        decode_snapshot(payload)


def test_a_node_another_source_still_claims_only_loses_this_sources_attrs(
        topo: Topology) -> None:
    apply_snapshot(topo, k8s(10.0, ["a"], []))
    slurm = InventorySnapshot("slurm", 10.0, frozenset({NODE}),
                              (EntityRecord("node:a", {"slurm.node": "a"}),))
    apply_snapshot(topo, slurm)
    result = apply_snapshot(topo, InventorySnapshot("slurm", 20.0, frozenset({NODE}), ()))
    assert (result.retired, result.updated) == (0, 1)
    assert dict(topo.entity("node:a").attrs) == {  # type: ignore[union-attr]
        "host.name": "a", "rack": "r1", "k8s.node.name": "a"}
