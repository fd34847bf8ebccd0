"""Tests for the Topology graph: building, history (valid_from/valid_to), views, indices, files."""

from __future__ import annotations

import pickle
from pathlib import Path

import networkx as nx
import pytest
from vigil.topology.graph import Topology
from vigil.topology.model import Entity, EntityKind, Relation, RelationKind

NODE = "node:gpu-b-002"
GPU = "gpu:gpu-a-001/0"
CONTAINS, DEPENDS_ON, RUNS_ON = RelationKind.CONTAINS, RelationKind.DEPENDS_ON, RelationKind.RUNS_ON


def test_fixture_loads_every_entity_and_relation(small: Topology) -> None:
    assert len(small) == 54
    assert small.relation_count() == 81
    assert small.relation_count(at=0.0) == 81
    assert sum(1 for _ in small.entities(EntityKind.RANK)) == 8


def test_entity_returns_a_frozen_record_with_read_only_attrs(small: Topology) -> None:
    gpu = small.entity(GPU)

    assert gpu is not None
    assert gpu == Entity(id=GPU, kind=EntityKind.GPU, valid_from=0.0, valid_to=None,
                         attrs={"host.name": "gpu-a-001", "UUID": "GPU-a001-0",
                                "pci_bus_id": "00000000:18:00.0"})
    with pytest.raises(TypeError):
        gpu.attrs["UUID"] = "GPU-other"  # type: ignore[index]
    assert small.entity("gpu:gpu-z-999/0") is None
    assert small.entity("switch:spine-1") == Entity("switch:spine-1", EntityKind.SWITCH, {}, 0.0)


def test_relations_lists_outgoing_then_incoming(small: Topology) -> None:
    assert small.relations(GPU) == [
        Relation(GPU, DEPENDS_ON, "nic:gpu-a-001/mlx5_0"),
        Relation("node:gpu-a-001", CONTAINS, GPU),
        Relation("rank:llm-70b-run3/0", RUNS_ON, GPU),
    ]
    with pytest.raises(KeyError, match="gpu:gpu-z-999/0"):
        small.relations("gpu:gpu-z-999/0")


@pytest.mark.parametrize(
    ("src", "dst", "missing"),
    [("rack:z", NODE, "rack:z"), ("rack:b", "node:gpu-z-001", "node:gpu-z-001")],
)
def test_add_relation_needs_both_ends_and_names_the_missing_one(
    small: Topology, src: str, dst: str, missing: str
) -> None:
    with pytest.raises(KeyError, match=missing):
        small.add_relation(src, CONTAINS, dst)
    assert small.relation_count() == 81


def test_one_relation_per_ordered_pair(small: Topology) -> None:
    small.add_relation("rack:a", CONTAINS, "node:gpu-a-001")  # again: a no-op
    assert small.relation_count() == 81

    with pytest.raises(ValueError, match="already contains"):
        small.add_relation("rack:a", DEPENDS_ON, "node:gpu-a-001")


def test_add_entity_rejects_unknown_kinds_and_non_string_attrs() -> None:
    topo = Topology()
    with pytest.raises(ValueError, match="toaster:t-1"):
        topo.add_entity("toaster:t-1")
    with pytest.raises(TypeError, match="dp"):
        topo.add_entity("rank:j/0", {"dp": 0})  # type: ignore[dict-item]
    assert len(topo) == 0


def test_removing_a_node_keeps_its_history(small: Topology) -> None:
    small.remove_entity(NODE, at=10.0)

    assert small.entity(NODE, at=5.0) is not None
    assert small.entity(NODE, at=15.0) is None
    assert small.entity(NODE) is None
    assert small.entity(NODE, at=10.0) is None  # valid_to is exclusive
    assert small.exists(NODE, at=9.99)
    assert NODE in small
    assert len(small) == 53
    # Its rack, 2 GPUs, 2 NICs, partition, pod: all seven relations end with it.
    assert small.relation_count() == 81 - 7
    assert small.relation_count(at=5.0) == 81
    assert Relation("rack:b", CONTAINS, NODE) in small.relations(NODE, at=5.0)
    assert small.relations(NODE, at=15.0) == []
    assert Relation("rack:b", CONTAINS, NODE) not in small.relations("rack:b")
    assert small.entity(NODE, at=5.0) == Entity(
        NODE, EntityKind.NODE, {"host.name": "gpu-b-002", "k8s.node.name": "gpu-b-002"},
        valid_from=0.0, valid_to=10.0)


def test_removing_a_relation_keeps_both_ends(small: Topology) -> None:
    small.remove_relation("link:leaf-1-0/p3", "nic:gpu-b-001/mlx5_0", at=10.0)

    assert small.exists("link:leaf-1-0/p3")
    assert small.view(5.0).has_edge("link:leaf-1-0/p3", "nic:gpu-b-001/mlx5_0")
    assert not small.view(15.0).has_edge("link:leaf-1-0/p3", "nic:gpu-b-001/mlx5_0")
    assert not small.view().has_edge("link:leaf-1-0/p3", "nic:gpu-b-001/mlx5_0")
    assert small.relation_count() == 80
    with pytest.raises(KeyError, match="nic:gpu-b-001/mlx5_0"):
        small.remove_relation("nic:gpu-b-001/mlx5_0", "link:leaf-1-0/p3", at=10.0)


def test_history_cannot_run_backwards(small: Topology) -> None:
    small.add_entity("node:gpu-c-001", at=20.0)
    with pytest.raises(ValueError, match=r"began at 20\.0"):
        small.remove_entity("node:gpu-c-001", at=10.0)
    with pytest.raises(KeyError, match="node:gpu-z-001"):
        small.remove_entity("node:gpu-z-001", at=10.0)


def test_entities_added_later_do_not_exist_before(small: Topology) -> None:
    small.add_entity("node:gpu-c-001", {"host.name": "gpu-c-001"}, at=20.0)
    small.add_relation("rack:b", CONTAINS, "node:gpu-c-001", at=20.0)

    assert not small.exists("node:gpu-c-001", at=10.0)
    assert small.exists("node:gpu-c-001", at=25.0)
    assert small.exists("node:gpu-c-001")
    assert "node:gpu-c-001" not in small.view(10.0)
    assert small.view(25.0).has_edge("rack:b", "node:gpu-c-001")
    assert not small.view(19.0).has_edge("rack:b", "node:gpu-c-001")


def test_re_adding_a_live_entity_replaces_attrs_and_keeps_its_start(small: Topology) -> None:
    small.add_entity(GPU, {"UUID": "GPU-new"}, at=30.0)

    gpu = small.entity(GPU)
    assert gpu is not None
    assert (dict(gpu.attrs), gpu.valid_from) == ({"UUID": "GPU-new"}, 0.0)
    assert small.index("UUID", "GPU-new") == GPU
    assert small.index("UUID", "GPU-a001-0") is None
    assert len(small) == 54


def test_re_adding_a_retired_entity_starts_a_new_life(small: Topology) -> None:
    small.remove_entity(NODE, at=10.0)
    small.add_entity(NODE, {"host.name": "gpu-b-002"}, at=40.0)

    assert small.exists(NODE)
    assert not small.exists(NODE, at=20.0)
    assert small.relations(NODE) == []  # relations retired with it stay retired
    assert small.index("host.name", "gpu-b-002") == NODE


def test_neighbors_steps_along_and_against_chosen_kinds(small: Topology) -> None:
    assert small.neighbors(GPU, along={DEPENDS_ON}, against={CONTAINS, RUNS_ON}) == [
        "nic:gpu-a-001/mlx5_0", "node:gpu-a-001", "rank:llm-70b-run3/0"]
    assert small.neighbors(GPU, against={RUNS_ON}) == ["rank:llm-70b-run3/0"]
    assert small.neighbors(GPU) == []
    small.remove_entity("node:gpu-a-001", at=10.0)
    assert small.neighbors(GPU, against={CONTAINS}) == []
    assert small.neighbors(GPU, against={CONTAINS}, at=5.0) == ["node:gpu-a-001"]
    with pytest.raises(KeyError, match="gpu:gpu-z-999/0"):
        small.neighbors("gpu:gpu-z-999/0", along={CONTAINS})


def test_views_are_read_only_and_show_one_moment(small: Topology) -> None:
    now = small.view()
    with pytest.raises(nx.NetworkXError):
        now.add_node("node:gpu-x-001")
    assert now.number_of_nodes() == 54
    assert now.nodes[GPU]["kind"] is EntityKind.GPU
    assert now.edges["rack:a", "node:gpu-a-001"]["kind"] is CONTAINS

    small.remove_entity(NODE, at=10.0)
    assert set(small.view(5.0)) == set(now)
    assert set(small.view(15.0)) == set(now) - {NODE}
    assert set(small.view()) == set(now) - {NODE}
    with pytest.raises(nx.NetworkXError):
        small.view(5.0).add_edge("rack:a", NODE)


def test_view_can_keep_only_some_relation_kinds(small: Topology) -> None:
    fabric = small.view(kinds={RelationKind.CONNECTS})

    assert fabric.number_of_nodes() == 54
    assert fabric.number_of_edges() == 20
    assert {d["kind"] for _, _, d in fabric.edges(data=True)} == {RelationKind.CONNECTS}


def test_index_finds_entities_by_source_names(small: Topology) -> None:
    # GPUs and pods carry their host's names too; the node keeps them.
    assert small.index("host.name", "gpu-a-001") == "node:gpu-a-001"
    assert small.index("k8s.node.name", "gpu-b-001") == "node:gpu-b-001"
    assert small.index("k8s.pod.name", "llm-70b-run3-worker-2") == "pod:train/llm-70b-run3-worker-2"
    assert small.index("UUID", "GPU-b002-1") == "gpu:gpu-b-002/1"
    assert small.index("ib.guid", "0xb001000000000001") == "nic:gpu-b-001/mlx5_1"
    assert small.index("ib.device", "gpu-b-001|mlx5_1") == "nic:gpu-b-001/mlx5_1"
    assert small.index("Hostname", "gpu-a-001") is None
    with pytest.raises(ValueError, match="not indexed"):
        small.index("dp", "0")


def test_pci_bus_ids_are_scoped_to_their_host(small: Topology) -> None:
    assert small.gpu_by_pci("gpu-a-001", "00000000:18:00.0") == "gpu:gpu-a-001/0"
    assert small.gpu_by_pci("gpu-b-002", "00000000:18:00.0") == "gpu:gpu-b-002/0"
    assert small.gpu_by_pci("gpu-b-002", "0000:2a:00.0") == "gpu:gpu-b-002/1"  # sysfs spelling
    assert small.index("pci_bus_id", "gpu-a-002|0000:2A:00.0") == "gpu:gpu-a-002/1"
    assert small.index("pci_bus_id", "gpu-a-002|0000:1a:00.0") == "nic:gpu-a-002/mlx5_0"
    assert small.gpu_by_pci("gpu-a-002", "0000:1a:00.0") is None  # a NIC, not a GPU
    assert small.gpu_by_pci("gpu-z-999", "00000000:18:00.0") is None


def test_index_forgets_retired_entities(small: Topology) -> None:
    small.remove_entity(NODE, at=10.0)

    assert small.index("host.name", "gpu-b-002") is None
    assert small.index("UUID", "GPU-b002-0") == "gpu:gpu-b-002/0"  # the GPU was not retired


def test_index_prefers_the_coarser_kind_whatever_the_order() -> None:
    topo = Topology()
    topo.add_entity("gpu:h1/0", {"host.name": "h1"})
    topo.add_entity("node:h1", {"host.name": "h1"})
    topo.add_entity("gpu:h1/1", {"host.name": "h1"})

    assert topo.index("host.name", "h1") == "node:h1"


def test_save_and_load_round_trip_with_history(small: Topology, tmp_path: Path) -> None:
    small.remove_entity(NODE, at=10.0)
    small.add_entity("node:gpu-c-001", {"host.name": "gpu-c-001"}, at=20.0)
    small.save(tmp_path / "topo.pickle")

    loaded = Topology.load(tmp_path / "topo.pickle")

    assert (len(loaded), loaded.relation_count()) == (len(small), small.relation_count())
    assert loaded.entity(NODE, at=5.0) == small.entity(NODE, at=5.0)
    assert loaded.entity(NODE) is None
    assert loaded.relations("rack:b", at=5.0) == small.relations("rack:b", at=5.0)
    assert sorted(loaded.view().edges) == sorted(small.view().edges)
    assert loaded.index("host.name", "gpu-c-001") == "node:gpu-c-001"
    assert loaded.gpu_by_pci("gpu-a-001", "0000:18:00.0") == GPU
    # A loaded topology keeps growing like the original.
    loaded.add_relation("rack:b", CONTAINS, "node:gpu-c-001", at=20.0)
    assert loaded.relation_count() == small.relation_count() + 1
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("content", [b"not a pickle", pickle.dumps({"format": "other/9"}), b""],
                         ids=["garbage", "other-format", "empty"])
def test_load_rejects_what_is_not_a_snapshot(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pickle"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.pickle"):
        Topology.load(path)
