"""Tests for topology queries on data/small.yaml, whose answers are worked out by hand below."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, RelationKind
from vigil.topology.queries import (
    blast_radius,
    job_placement,
    path,
    peers,
    shared_dependencies,
    upstream,
)

JOB = "job:llm-70b-run3"
HOSTS = ("gpu-a-001", "gpu-a-002", "gpu-b-001", "gpu-b-002")
A1, A2, B1, B2 = (f"node:{host}" for host in HOSTS)
MEMBER_OF, RUNS_ON = RelationKind.MEMBER_OF, RelationKind.RUNS_ON


def rank(i: int) -> str:
    return f"rank:llm-70b-run3/{i}"


def gpu(host: str, i: int) -> str:
    return f"gpu:{host}/{i}"


def nic(host: str, i: int) -> str:
    return f"nic:{host}/mlx5_{i}"


def pod(i: int) -> str:
    return f"pod:train/llm-70b-run3-worker-{i}"


def on_hosts(hosts: tuple[str, ...]) -> set[str]:
    """Each host's node, GPUs and NICs."""
    return ({f"node:{h}" for h in hosts} | {gpu(h, i) for h in hosts for i in (0, 1)}
            | {nic(h, i) for h in hosts for i in (0, 1)})


# --- blast radius ------------------------------------------------------------------------------
def test_a_leaf_takes_its_rail_and_the_ranks_on_it(small: Topology) -> None:
    assert blast_radius(small, "switch:leaf-1-0") == (
        {f"link:leaf-1-0/p{p}" for p in (1, 2, 3, 4)} | {nic(h, 0) for h in HOSTS}
        | {gpu(h, 0) for h in HOSTS} | {rank(0), rank(2), rank(4), rank(6)} | {JOB})


def test_a_gpu_takes_its_rank_and_the_job(small: Topology) -> None:
    assert blast_radius(small, gpu("gpu-a-001", 0)) == {rank(0), JOB}


def test_a_power_feed_takes_its_rack_and_everything_on_it(small: Topology) -> None:
    assert blast_radius(small, "power:feed-a") == (
        {"rack:a"} | on_hosts(HOSTS[:2]) | {pod(0), pod(1)} | {rank(i) for i in range(4)}
        | {JOB, "partition:gpu"})


def test_storage_takes_its_volumes_their_mounters_and_the_job(small: Topology) -> None:
    assert blast_radius(small, "storage:sfs-1") == (
        {"volume:sfs-1/ckpt", "volume:sfs-1/home"} | on_hosts(HOSTS[:3])
        | {pod(0), pod(1), pod(2)} | {rank(i) for i in range(6)} | {JOB, "partition:gpu"})


def test_a_spine_takes_the_whole_fabric(small: Topology) -> None:
    hit = blast_radius(small, "switch:spine-1")
    assert len(hit) == 37
    assert {"switch:leaf-1-0", "switch:leaf-1-1", JOB} <= hit
    assert not any(e.startswith(("node:", "rack:", "pod:")) for e in hit)


def test_a_job_failing_impacts_nothing_else(small: Topology) -> None:
    assert blast_radius(small, JOB) == set()


# --- upstream and shared dependencies -----------------------------------------------------------
NODE_A1_UPSTREAM = {"rack:a", "power:feed-a", "link:leaf-1-0/p1", "link:leaf-1-1/p1",
                    "switch:leaf-1-0", "switch:leaf-1-1", "link:spine-1/p1", "link:spine-1/p2",
                    "switch:spine-1", "volume:sfs-1/home", "storage:sfs-1"}


def test_a_node_depends_on_its_rack_power_fabric_and_mounts(small: Topology) -> None:
    assert upstream(small, A1) == NODE_A1_UPSTREAM


def test_a_gpu_depends_on_its_own_rail_only(small: Topology) -> None:
    assert upstream(small, gpu("gpu-a-001", 0)) == {
        A1, nic("gpu-a-001", 0), "link:leaf-1-0/p1", "switch:leaf-1-0", "link:spine-1/p1",
        "switch:spine-1", "rack:a", "power:feed-a", "volume:sfs-1/home", "storage:sfs-1"}


def test_a_job_depends_on_everything_but_the_pods(small: Topology) -> None:
    everything = set(small.entities())
    assert upstream(small, JOB) == everything - {JOB} - {pod(i) for i in range(4)}


def test_shared_dependencies_rank_by_coverage_then_id(small: Topology) -> None:
    assert shared_dependencies(small, [A1, A2, B1]) == [
        ("link:spine-1/p1", 3), ("link:spine-1/p2", 3), ("storage:sfs-1", 3),
        ("switch:leaf-1-0", 3), ("switch:leaf-1-1", 3), ("switch:spine-1", 3),
        ("volume:sfs-1/home", 3), ("power:feed-a", 2), ("rack:a", 2)]


def test_shared_dependencies_of_gpus_on_one_rail(small: Topology) -> None:
    assert shared_dependencies(small, [gpu("gpu-a-001", 0), gpu("gpu-b-001", 0)]) == [
        ("link:spine-1/p1", 2), ("storage:sfs-1", 2), ("switch:leaf-1-0", 2),
        ("switch:spine-1", 2), ("volume:sfs-1/home", 2)]


def test_shared_dependencies_of_chosen_kinds(small: Topology) -> None:
    power = (EntityKind.RACK, EntityKind.POWER)
    assert shared_dependencies(small, [A1, A2, B1], kinds=power) == [
        ("power:feed-a", 2), ("rack:a", 2)]
    assert shared_dependencies(small, [A1, B1], kinds=power) == []
    assert shared_dependencies(small, [A1, A1], kinds=power) == []  # one entity, named twice


# --- paths -------------------------------------------------------------------------------------
def test_path_between_racks_crosses_the_rail(small: Topology) -> None:
    assert path(small, gpu("gpu-a-001", 0), gpu("gpu-b-001", 0)) == [
        gpu("gpu-a-001", 0), nic("gpu-a-001", 0), "link:leaf-1-0/p1", "switch:leaf-1-0",
        "link:leaf-1-0/p3", nic("gpu-b-001", 0), gpu("gpu-b-001", 0)]


def test_path_within_a_rack_takes_the_cables_not_the_enclosure(small: Topology) -> None:
    route = path(small, gpu("gpu-a-001", 0), gpu("gpu-a-002", 0))
    assert len(route) == 7
    assert "switch:leaf-1-0" in route and "rack:a" not in route
    assert path(small, gpu("gpu-a-001", 0), gpu("gpu-a-001", 1)) == [
        gpu("gpu-a-001", 0), A1, gpu("gpu-a-001", 1)]
    assert path(small, A1, A1) == [A1]
    assert path(small, "rack:a", A1) == ["rack:a", A1]  # an enclosure may be an end


def test_path_ignores_logical_relations(small: Topology) -> None:
    assert path(small, rank(0), rank(4)) == []  # both in the job, but no cable between them


def test_path_at_a_time_avoids_a_cut_cable(small: Topology) -> None:
    small.remove_entity("link:leaf-1-0/p3", at=10.0)
    a, b = gpu("gpu-a-001", 0), gpu("gpu-b-001", 0)

    assert len(path(small, a, b, at=5.0)) == 7
    assert path(small, a, b, at=15.0) == [
        a, A1, nic("gpu-a-001", 1), "link:leaf-1-1/p1", "switch:leaf-1-1", "link:leaf-1-1/p3",
        nic("gpu-b-001", 1), B1, b]


# --- jobs ----------------------------------------------------------------------------------------
def test_job_placement_maps_nodes_to_their_ranks(small: Topology) -> None:
    assert job_placement(small, JOB) == {
        A1: [rank(0), rank(1)], A2: [rank(2), rank(3)], B1: [rank(4), rank(5)],
        B2: [rank(6), rank(7)]}


def test_job_placement_sorts_ranks_by_number(small: Topology) -> None:
    small.add_entity(rank(10), {"dp": "2", "pp": "1", "tp": "0"})
    small.add_relation(rank(10), RUNS_ON, gpu("gpu-a-002", 1))
    small.add_relation(rank(10), MEMBER_OF, JOB)

    assert job_placement(small, JOB)[A2] == [rank(2), rank(3), rank(10)]
    with pytest.raises(ValueError, match="kind job"):
        job_placement(small, A1)


@pytest.mark.parametrize(
    ("entity", "expected"),
    [(rank(0), [B1]), (rank(3), [B2]), (rank(6), [A2]), (A2, [B2]), (B1, [A1])],
)
def test_peers_are_the_nodes_of_the_other_data_parallel_replicas(
    small: Topology, entity: str, expected: list[str]
) -> None:
    assert peers(small, entity) == expected


def test_peers_match_the_tensor_coordinate_too(small: Topology) -> None:
    # Move rank 4 (dp1 pp0 tp0) next to rank 6, so ranks 0 and 1 have peers on different nodes.
    small.remove_relation(rank(4), gpu("gpu-b-001", 0), at=1.0)
    small.add_relation(rank(4), RUNS_ON, gpu("gpu-b-002", 0), at=1.0)

    assert peers(small, rank(0)) == [B2]
    assert peers(small, rank(1)) == [B1]
    assert peers(small, A1) == [B1, B2]
    assert peers(small, rank(0), at=0.5) == [B1]


def test_peers_of_a_node_without_ranks_is_empty(small: Topology) -> None:
    small.add_entity("node:gpu-c-001")
    assert peers(small, "node:gpu-c-001") == []


def test_peers_need_a_rank_or_a_node_of_one_job(small: Topology) -> None:
    with pytest.raises(ValueError, match="rank or a node"):
        peers(small, "switch:leaf-1-0")
    small.add_entity("job:other")
    small.add_entity("rank:other/0", {"dp": "0", "pp": "0", "tp": "0"})
    small.add_relation("rank:other/0", RUNS_ON, gpu("gpu-b-001", 0))
    small.add_relation("rank:other/0", MEMBER_OF, "job:other")
    with pytest.raises(ValueError, match="job:llm-70b-run3, job:other"):
        peers(small, B1)


def test_peers_name_a_rank_without_coordinates(small: Topology) -> None:
    small.add_entity(rank(8))
    small.add_relation(rank(8), MEMBER_OF, JOB)
    with pytest.raises(ValueError, match="rank:llm-70b-run3/8"):
        peers(small, rank(0))


# --- time travel -------------------------------------------------------------------------------
def test_queries_in_the_past_see_a_node_removed_since(small: Topology) -> None:
    small.remove_entity(B2, at=10.0)

    before = blast_radius(small, "power:feed-b", at=5.0)
    after = blast_radius(small, "power:feed-b", at=15.0)
    assert {B2, gpu("gpu-b-002", 0), pod(3), rank(7)} <= before
    assert not {B2, gpu("gpu-b-002", 0), pod(3), rank(7)} & after
    assert B1 in after
    assert B2 in job_placement(small, JOB, at=5.0)
    assert B2 not in job_placement(small, JOB, at=15.0)
    assert peers(small, rank(3), at=5.0) == [B2]
    assert peers(small, rank(3), at=15.0) == []
    assert ("power:feed-b", 2) in shared_dependencies(small, [B1, B2], at=5.0)
    with pytest.raises(KeyError, match=r"did not exist at t=15\.0"):
        shared_dependencies(small, [B1, B2], at=15.0)


def test_upstream_in_the_past_sees_a_cable_cut_since(small: Topology) -> None:
    small.remove_entity("link:leaf-1-0/p1", at=10.0)

    assert upstream(small, A1, at=5.0) == NODE_A1_UPSTREAM
    assert upstream(small, A1, at=15.0) == NODE_A1_UPSTREAM - {
        "link:leaf-1-0/p1", "switch:leaf-1-0", "link:spine-1/p1"}


# --- errors --------------------------------------------------------------------------------------
Query = Callable[[Topology, str], object]
QUERIES: list[Query] = [
    blast_radius, upstream, job_placement, peers,
    lambda topo, e: shared_dependencies(topo, [A1, e]),
    lambda topo, e: path(topo, A1, e),
]


@pytest.mark.parametrize("query", QUERIES)
def test_queries_name_an_unknown_entity(small: Topology, query: Query) -> None:
    with pytest.raises(KeyError, match="unknown entity 'node:gpu-z-999'"):
        query(small, "node:gpu-z-999")


@pytest.mark.parametrize("query", QUERIES)
def test_queries_name_an_entity_retired_before_now(small: Topology, query: Query) -> None:
    small.remove_entity(B2, at=10.0)
    with pytest.raises(KeyError, match="'node:gpu-b-002' did not exist now"):
        query(small, B2)
