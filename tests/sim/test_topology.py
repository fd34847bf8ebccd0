"""Tests for the simulated cluster's shape: ids, rail-optimised cabling, jobs, entities."""

from __future__ import annotations

import pytest
from vigil.sim.topology import ClusterSpec, SimTopology, build_topology, rack_name

# Two racks of four nodes; each rack is its own rail group, and each runs one job.
TWO_GROUPS = ClusterSpec(racks=2, nodes_per_rack=4, nodes_per_group=4, jobs=2)
RACK_A = ["gpu-a-001", "gpu-a-002", "gpu-a-003", "gpu-a-004"]
RACK_B = ["gpu-b-001", "gpu-b-002", "gpu-b-003", "gpu-b-004"]


@pytest.fixture
def topo() -> SimTopology:
    return build_topology(TWO_GROUPS)


@pytest.mark.parametrize(
    ("index", "name"),
    [(0, "a"), (1, "b"), (25, "z"), (26, "aa"), (27, "ab"), (51, "az"), (52, "ba"), (701, "zz"),
     (702, "aaa")],
)
def test_rack_names_run_like_spreadsheet_columns(index: int, name: str) -> None:
    assert rack_name(index) == name


def test_nodes_are_named_by_rack_and_position(topo: SimTopology) -> None:
    assert TWO_GROUPS.nodes == 8
    assert topo.nodes == RACK_A + RACK_B
    assert topo.racks == ["a", "b"]
    assert topo.rack_of == {n: n[4] for n in topo.nodes}
    assert topo.index == {n: i for i, n in enumerate(topo.nodes)}
    assert topo.storage == ["pfs-1", "obj-1"]


def test_racks_of_thirty_are_named_past_z() -> None:
    topo = build_topology(ClusterSpec(racks=28, nodes_per_rack=1, jobs=0))

    assert topo.nodes[25:] == ["gpu-z-001", "gpu-aa-001", "gpu-ab-001"]
    assert topo.jobs == []
    assert topo.job_of == {}


def test_rail_groups_are_consecutive_runs_of_nodes_across_racks() -> None:
    topo = build_topology(ClusterSpec(racks=2, nodes_per_rack=4, nodes_per_group=3))

    assert [topo.group_of[n] for n in topo.nodes] == [0, 0, 0, 1, 1, 1, 2, 2]


def test_nic_k_of_every_node_in_a_group_goes_to_leaf_g_k(topo: SimTopology) -> None:
    for group, members in ((1, RACK_A), (2, RACK_B)):
        for node in members:
            assert [topo.leaf(node, k) for k in range(8)] == [
                f"switch:leaf-{group}-{k}" for k in range(8)
            ]
    assert topo.nodes_on_leaf("switch:leaf-1-0") == (RACK_A, 0)
    assert topo.nodes_on_leaf("switch:leaf-2-5") == (RACK_B, 5)


def test_links_are_named_by_leaf_and_the_nodes_port_on_it(topo: SimTopology) -> None:
    assert topo.link("gpu-a-001", 0) == "link:leaf-1-0/p1"
    assert topo.link("gpu-a-004", 7) == "link:leaf-1-7/p4"
    # The port is the node's position in its group, so rack b starts again at p1.
    assert topo.link("gpu-b-001", 3) == "link:leaf-2-3/p1"
    assert topo.link("gpu-b-003", 5) == "link:leaf-2-5/p3"
    # Every node of a group has its own port on each leaf.
    for members in (RACK_A, RACK_B):
        for rail in range(8):
            assert len({topo.link(n, rail) for n in members}) == len(members)


def test_jobs_split_the_nodes_and_factor_into_dp_tp_pp(topo: SimTopology) -> None:
    first, second = topo.jobs

    assert (first.name, first.nodes, first.id) == ("llm-8b-01", tuple(RACK_A), "job:llm-8b-01")
    assert (second.name, second.nodes) == ("llm-70b-02", tuple(RACK_B))
    assert topo.job_of == dict.fromkeys(RACK_A, "llm-8b-01") | dict.fromkeys(RACK_B, "llm-70b-02")
    for job in topo.jobs:
        assert job.ranks == 32
        assert job.tensor_parallel == 8  # TP stays inside one HGX node
        assert job.pipeline_parallel in (2, 4)
        assert job.data_parallel * job.tensor_parallel * job.pipeline_parallel == job.ranks
        assert job.storage == "pfs-1"
        assert topo.job(job.name) is job


def test_small_jobs_do_not_pipeline_and_leftover_nodes_stay_idle() -> None:
    topo = build_topology(ClusterSpec(racks=1, nodes_per_rack=8, jobs=3))

    assert [(j.name, j.nodes) for j in topo.jobs] == [
        ("llm-8b-01", ("gpu-a-001", "gpu-a-002")),
        ("llm-70b-02", ("gpu-a-003", "gpu-a-004")),
        ("llm-405b-03", ("gpu-a-005", "gpu-a-006")),
    ]
    assert [(j.pipeline_parallel, j.data_parallel) for j in topo.jobs] == [(1, 2)] * 3
    assert "gpu-a-007" not in topo.job_of
    assert topo.ranks_on("gpu-a-008") == []


def test_pipeline_depth_is_drawn_from_the_seed() -> None:
    depths = {
        seed: build_topology(ClusterSpec(racks=1, nodes_per_rack=4, seed=seed)).jobs[0]
        .pipeline_parallel
        for seed in range(12)
    }

    assert set(depths.values()) == {2, 4}
    assert build_topology(TWO_GROUPS) == build_topology(TWO_GROUPS)


def test_each_node_holds_the_ranks_of_its_gpus(topo: SimTopology) -> None:
    assert topo.ranks_on("gpu-a-001") == [f"rank:llm-8b-01/{r}" for r in range(8)]
    assert topo.ranks_on("gpu-a-003") == [f"rank:llm-8b-01/{r}" for r in range(16, 24)]
    assert topo.ranks_on("gpu-b-004") == [f"rank:llm-70b-02/{r}" for r in range(24, 32)]


def test_ranks_follow_the_gpus_per_node() -> None:
    topo = build_topology(ClusterSpec(racks=1, nodes_per_rack=2, gpus_per_node=4))

    assert topo.jobs[0].ranks == 8
    assert topo.ranks_on("gpu-a-002") == [f"rank:llm-8b-01/{r}" for r in range(4, 8)]


def test_entities_list_nodes_with_their_parts_then_switches_storage_and_jobs() -> None:
    topo = build_topology(ClusterSpec(racks=1, nodes_per_rack=2, gpus_per_node=2,
                                      nics_per_node=2))

    assert topo.entities() == [
        "node:gpu-a-001", "gpu:gpu-a-001/0", "gpu:gpu-a-001/1",
        "nic:gpu-a-001/mlx5_0", "nic:gpu-a-001/mlx5_1",
        "node:gpu-a-002", "gpu:gpu-a-002/0", "gpu:gpu-a-002/1",
        "nic:gpu-a-002/mlx5_0", "nic:gpu-a-002/mlx5_1",
        "switch:leaf-1-0", "switch:leaf-1-1",
        "storage:pfs-1", "storage:obj-1",
        "job:llm-8b-01",
    ]


def test_entities_have_one_leaf_per_rail_of_each_group(topo: SimTopology) -> None:
    switches = [e for e in topo.entities() if e.startswith("switch:")]

    assert switches == [f"switch:leaf-{g}-{r}" for g in (1, 2) for r in range(8)]
    assert len(topo.entities()) == len(set(topo.entities())) == 8 * 17 + 16 + 2 + 2
