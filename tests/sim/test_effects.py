"""Tests for fault effects: the ground truth each one reports, and how its consequences unfold."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vigil.diagnosis.library import FaultLibrary
from vigil.sim.cluster import SimCluster
from vigil.sim.effects import Timing
from vigil.sim.logs import KERNEL, TRAINING
from vigil.sim.scenario import shipped_scenarios
from vigil.sim.telemetry import GPU_FAMILIES
from vigil.sim.topology import ClusterSpec, SimTopology

T0 = 1_718_000_000.0
# Two racks of four nodes; each rack is its own rail group and runs one job.
SPEC = ClusterSpec(racks=2, nodes_per_rack=4, nodes_per_group=4, jobs=2)
RACK_A = ("gpu-a-001", "gpu-a-002", "gpu-a-003", "gpu-a-004")  # job llm-8b-01
RACK_B = ("gpu-b-001", "gpu-b-002", "gpu-b-003", "gpu-b-004")  # job llm-70b-02
# Distinct delays, none the default, so each test shows which one an effect waits for.
TIMING = Timing(nccl_timeout_s=20.0, ib_transport_timeout_s=5.0, crash_propagation_s=1.5)
NCCL_TIMEOUT = "Watchdog caught collective operation timeout"
NCCL_REMOTE = "remote process exited or there was a network error"


@pytest.fixture
def sim(library: FaultLibrary, tmp_path: Path) -> SimCluster:
    """No routine log lines (the interval is a lifetime): the logs hold only what faults wrote."""
    return SimCluster(library, tmp_path / "sim", spec=SPEC, now=T0, timing=TIMING,
                      log_interval_s=1e12)


def _job_wide(topo: SimTopology, job: int) -> set[str]:
    """The entities a fault that stops job `job` touches: the job, its nodes, pods and ranks."""
    j = topo.jobs[job]
    return ({j.id} | {f"node:{n}" for n in j.nodes}
            | {f"pod:train/{j.name}-worker-{w}" for w in range(len(j.nodes))}
            | {f"rank:{j.name}/{r}" for r in range(len(j.nodes) * 8)})


def _lines(sim: SimCluster, node: str, source: str = TRAINING) -> list[str]:
    return sim.logs.path(node, source).read_text().splitlines()


def _training_lines(sim: SimCluster) -> dict[str, list[str]]:
    """Node -> its train.log lines, for the nodes that wrote any."""
    return {n: lines for n in sim.topo.nodes if (lines := _lines(sim, n))}


def _stamp(line: str) -> float:
    """The time of a training-log line (ISO, milliseconds, Z)."""
    return datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def _nic(sim: SimCluster, node: str, metric: str) -> list[float]:
    """One node-exporter infiniband family of `node`, by port mlx5_0..7."""
    for family in text_string_to_metric_families(sim.node_exporter(node)):
        values = [s.value for s in family.samples if s.name == metric]
        if values:
            return values
    raise AssertionError(f"no {metric} in the exposition")


def _running(sim: SimCluster) -> set[str]:
    """Nodes serving trainer metrics, i.e. whose job process is alive."""
    return {n for n in sim.topo.nodes if sim.trainer(n) is not None}


# --- ground truth of every fault the shipped scenarios play -------------------------------

# fault -> (target, entities beyond the job-wide ones, job indexes stopped or slowed, nodes)
TRUTH_CASES: dict[str, tuple[str, set[str], tuple[int, ...], tuple[str, ...]]] = {
    "gpu.xid.79": ("gpu:gpu-a-002/3", {"gpu:gpu-a-002/3"}, (0,), RACK_A),
    "gpu.xid.74": ("gpu:gpu-a-002/3", {"gpu:gpu-a-002/3"}, (0,), RACK_A),
    "gpu.xid.48": ("gpu:gpu-a-002/3", {"gpu:gpu-a-002/3"}, (0,), RACK_A),
    "host.soft_lockup": ("node:gpu-a-004", set(), (0,), RACK_A),
    "job.cuda_oom": ("job:llm-70b-02", set(), (1,), RACK_B),
    "net.ib.port_errors": ("switch:leaf-1-3",
                           {"switch:leaf-1-3"} | {f"nic:{n}/mlx5_3" for n in RACK_A},
                           (0,), RACK_A),
    "net.ib.link_down": ("nic:gpu-b-002/mlx5_5",
                         {"nic:gpu-b-002/mlx5_5", "link:leaf-2-5/p2", "switch:leaf-2-5"},
                         (1,), RACK_B),
    "sched.slurm.node_not_responding": ("node:gpu-b-004", set(), (1,), RACK_B),
    "storage.nfs.not_responding": ("storage:pfs-1", {"storage:pfs-1"}, (0, 1),
                                   RACK_A + RACK_B),
}


def test_every_fault_of_the_shipped_scenarios_has_a_truth_case() -> None:
    played = {f.fault for s in shipped_scenarios() for f in s.faults}

    assert played == set(TRUTH_CASES) | {"gpu.thermal_throttle"}


@pytest.mark.parametrize("fault", sorted(TRUTH_CASES))
def test_truth_lists_whom_the_fault_touches(
    sim: SimCluster, library: FaultLibrary, fault: str
) -> None:
    target, own, jobs, nodes = TRUTH_CASES[fault]

    truth = sim.inject(fault, target, T0, duration_s=90.0, scenario="case").truth

    assert truth is not None
    expected = set(own).union(*(_job_wide(sim.topo, j) for j in jobs))
    assert set(truth.affected) == expected
    assert list(truth.affected) == sorted(truth.affected)
    assert truth.nodes == tuple(sorted(nodes))
    assert (truth.scenario, truth.fault_id, truth.layer, truth.root_entity) == (
        "case", fault, library.get(fault).layer, target)
    assert (truth.onset, truth.end) == (T0, T0 + 90.0)


def test_a_hot_gpu_touches_only_its_node_and_the_ranks_on_it(sim: SimCluster) -> None:
    truth = sim.inject("gpu.thermal_throttle", "gpu:gpu-a-002/3", T0).truth

    assert truth is not None
    assert set(truth.affected) == {"gpu:gpu-a-002/3", "node:gpu-a-002", "job:llm-8b-01",
                                   "pod:train/llm-8b-01-worker-1"} | {
        f"rank:llm-8b-01/{r}" for r in range(8, 16)}
    assert truth.nodes == ("gpu-a-002",)


def test_a_storage_system_no_job_uses_touches_only_itself(sim: SimCluster) -> None:
    truth = sim.inject("storage.slow_io", "storage:obj-1", T0).truth

    assert truth is not None
    assert (truth.affected, truth.nodes) == (("storage:obj-1",), ())


# --- consequences over simulated time -----------------------------------------------------


def test_xid_79_peers_hit_the_nccl_watchdog_only_after_its_timeout(sim: SimCluster) -> None:
    sim.inject("gpu.xid.79", "gpu:gpu-a-002/3", T0)

    sim.step(T0 + 1)
    sim.step(T0 + TIMING.nccl_timeout_s - 0.5)
    assert _training_lines(sim) == {}
    assert _running(sim) == set(RACK_A + RACK_B)

    sim.step(T0 + TIMING.nccl_timeout_s + 0.5)
    lines = _training_lines(sim)
    assert set(lines) == {"gpu-a-001", "gpu-a-003", "gpu-a-004"}  # not the GPU's own node
    for node, (line,) in lines.items():
        rank = RACK_A.index(node) * 8
        assert f"[Rank {rank}] {NCCL_TIMEOUT}" in line
        assert "Timeout(ms)=20000" in line
        assert _stamp(line) >= T0 + TIMING.nccl_timeout_s
    assert _running(sim) == set(RACK_B)
    rows = [sim.topo.index[n] for n in RACK_A]
    assert sim.tel.util[rows].max() <= 2


@pytest.mark.parametrize(
    ("fault", "target"),
    [("gpu.xid.48", "gpu:gpu-a-003/0"), ("gpu.xid.13", "gpu:gpu-a-003/7"),
     ("host.oom_kill", "node:gpu-a-003")],
)
def test_a_crash_fails_the_peers_after_crash_propagation(
    sim: SimCluster, fault: str, target: str
) -> None:
    sim.inject(fault, target, T0)

    sim.step(T0 + TIMING.crash_propagation_s - 0.5)
    assert _training_lines(sim) == {}
    assert _running(sim) == set(RACK_A + RACK_B)

    sim.step(T0 + TIMING.crash_propagation_s + 0.5)
    lines = _training_lines(sim)
    assert set(lines) == {"gpu-a-001", "gpu-a-002", "gpu-a-004"}
    assert all(len(v) == 1 and NCCL_REMOTE in v[0] for v in lines.values())
    assert _running(sim) == set(RACK_B)


def test_a_non_fatal_xid_leaves_the_job_running(sim: SimCluster) -> None:
    truth = sim.inject("gpu.xid.92", "gpu:gpu-a-001/4", T0).truth
    sim.step(T0 + 60)

    assert truth is not None and truth.nodes == ("gpu-a-001",)
    assert _training_lines(sim) == {}
    assert _running(sim) == set(RACK_A + RACK_B)
    assert sim.tel.ecc_sbe[0, 4] >= 500
    assert sim.tel.ecc_sbe[0, [0, 1, 2, 3, 5, 6, 7]].max() < 5


def test_link_down_drops_the_port_then_nccl_fails_after_the_ib_timeout(sim: SimCluster) -> None:
    downed = _nic(sim, "gpu-b-002", "node_infiniband_link_downed_total")

    injection = sim.inject("net.ib.link_down", "nic:gpu-b-002/mlx5_5", T0, duration_s=30.0)

    assert _nic(sim, "gpu-b-002", "node_infiniband_state_id") == [4, 4, 4, 4, 4, 1, 4, 4]
    assert _nic(sim, "gpu-b-002", "node_infiniband_link_downed_total") == [
        v + (1 if k == 5 else 0) for k, v in enumerate(downed)]
    assert injection.log_line.endswith(" gpu-b-002 kernel: mlx5_core 0000:bc:00.0 ib5: Link down")
    assert _lines(sim, "gpu-b-002", KERNEL) == [injection.log_line]
    sim.step(T0 + TIMING.ib_transport_timeout_s - 0.5)
    assert _training_lines(sim) == {}

    sim.step(T0 + TIMING.ib_transport_timeout_s + 0.5)
    lines = _training_lines(sim)
    assert set(lines) == {"gpu-b-001", "gpu-b-003", "gpu-b-004"}
    assert all(NCCL_REMOTE in v[0] for v in lines.values())
    assert _running(sim) == set(RACK_A)

    sim.step(T0 + 31)  # repaired: the port comes back, the counter keeps its history
    assert _nic(sim, "gpu-b-002", "node_infiniband_state_id") == [4] * 8
    assert _nic(sim, "gpu-b-002", "node_infiniband_link_downed_total")[5] == downed[5] + 1
    assert _running(sim) == set(RACK_A + RACK_B)


def test_switch_port_errors_raise_symbol_errors_on_that_rail_of_the_group(
    sim: SimCluster,
) -> None:
    rows = [sim.topo.index[n] for n in RACK_A]
    sim.step(T0 + 10)
    step_time = sim.tel.step_time[rows].copy()
    symbols = {n: _nic(sim, n, "node_infiniband_symbol_error_total") for n in sim.topo.nodes}

    sim.inject("net.ib.port_errors", "switch:leaf-1-3", T0 + 10)
    sim.step(T0 + 20)

    for node in sim.topo.nodes:
        rise = np.subtract(_nic(sim, node, "node_infiniband_symbol_error_total"), symbols[node])
        if node in RACK_A:
            assert rise[3] > 200, node
            assert np.delete(rise, 3).max() < 5, node
        else:
            assert rise.max() < 5, node
    assert sim.tel.step_time[rows] == pytest.approx(step_time * 1.15, rel=0.05)
    assert _training_lines(sim) == {}  # slower, not failed
    assert _running(sim) == set(RACK_A + RACK_B)


def test_healing_one_switch_leaves_another_erroring(sim: SimCluster) -> None:
    sim.inject("net.ib.port_errors", "switch:leaf-1-3", T0, duration_s=10.0)
    sim.inject("net.ib.port_errors", "switch:leaf-2-6", T0, duration_s=100.0)
    sim.step(T0 + 15)
    before = {n: _nic(sim, n, "node_infiniband_symbol_error_total") for n in sim.topo.nodes}

    sim.step(T0 + 25)

    rise = {n: np.subtract(_nic(sim, n, "node_infiniband_symbol_error_total"), before[n])
            for n in sim.topo.nodes}
    assert max(rise[n][3] for n in RACK_A) < 5
    assert min(rise[n][6] for n in RACK_B) > 200


def test_node_not_responding_darkens_the_node_and_times_out_its_peers(sim: SimCluster) -> None:
    injection = sim.inject("sched.slurm.node_not_responding", "node:gpu-b-004", T0)

    assert sim.unreachable("gpu-b-004")
    assert not sim.unreachable("gpu-b-003")
    assert injection.log_line.endswith("] error: Nodes gpu-b-004 not responding")
    assert sim.scheduler_log.read_text() == injection.log_line + "\n"
    assert _lines(sim, "gpu-b-004", KERNEL) == []

    sim.step(T0 + TIMING.nccl_timeout_s + 0.5)
    lines = _training_lines(sim)
    assert set(lines) == {"gpu-b-001", "gpu-b-002", "gpu-b-003"}
    assert all(NCCL_TIMEOUT in v[0] for v in lines.values())


def test_an_nfs_server_that_stops_answering_is_logged_by_every_client(sim: SimCluster) -> None:
    sim.step(T0 + 10)
    checkpoint = sim.tel.checkpoint_s.max()

    injection = sim.inject("storage.nfs.not_responding", "storage:pfs-1", T0 + 10)
    sim.step(T0 + 20)

    for node in RACK_A + RACK_B:
        (line,) = _lines(sim, node, KERNEL)
        assert line.endswith(f" {node} kernel: nfs: server pfs-1 not responding, still trying")
    assert injection.log_line == _lines(sim, "gpu-a-001", KERNEL)[0]
    assert sim.tel.checkpoint_s.min() > 30 * checkpoint
    assert sim.tel.storage_latency[0] > 30 * sim.tel.storage_latency[1]


def test_a_hot_gpu_clocks_down_and_recovers_when_the_fault_ends(sim: SimCluster) -> None:
    sim.inject("gpu.thermal_throttle", "gpu:gpu-a-002/3", T0, duration_s=30.0)
    sim.step(T0 + 10)

    assert sim.tel.sm_clock[1, 3] == 1410
    assert sim.tel.temp[1, 3] > np.delete(sim.tel.temp[1], 3).max() + 10
    assert sim.tel.throttle[1, 3] != 0

    sim.step(T0 + 31)
    assert sim.tel.sm_clock[1, 3] == 1980
    assert np.count_nonzero(sim.tel.throttle) == 0


def test_loss_nan_turns_the_loss_of_every_node_of_the_job_nan(sim: SimCluster) -> None:
    injection = sim.inject("job.loss_nan", "job:llm-8b-01", T0)
    sim.step(T0 + 10)

    assert "Unexpected result tensor(nan" in injection.log_line
    rows = [sim.topo.index[n] for n in RACK_A]
    assert np.isnan(sim.tel.loss[rows]).all()
    assert not np.isnan(sim.tel.loss[[sim.topo.index[n] for n in RACK_B]]).any()
    assert _running(sim) == set(RACK_A + RACK_B)


def test_a_straggler_rank_slows_its_job_silently(sim: SimCluster) -> None:
    sim.step(T0 + 10)
    compute = sim.tel.compute_time.copy()

    injection = sim.inject("job.straggler", "job:llm-8b-01", T0 + 10)
    sim.step(T0 + 20)

    assert injection.log_line == ""  # nothing logs a straggler; only its timing shows
    slow = sim.topo.index["gpu-a-003"]  # the job's middle node
    assert sim.tel.compute_time[slow] == pytest.approx(compute[slow] * 1.07, rel=0.03)
    assert sim.tel.step_time[0] >= sim.tel.compute_time[slow]


def test_a_fault_repaired_before_its_consequence_has_none(sim: SimCluster) -> None:
    sim.inject("gpu.xid.79", "gpu:gpu-a-002/3", T0, duration_s=10.0)
    sim.step(T0 + 11)
    sim.step(T0 + TIMING.nccl_timeout_s + 5)

    assert _training_lines(sim) == {}
    assert _running(sim) == set(RACK_A + RACK_B)


def test_heal_all_restores_a_healthy_cluster(sim: SimCluster) -> None:
    for fault, target in (
        ("gpu.xid.79", "gpu:gpu-a-002/3"), ("gpu.thermal_throttle", "gpu:gpu-a-004/1"),
        ("net.ib.link_down", "nic:gpu-b-001/mlx5_0"), ("net.ib.port_errors", "switch:leaf-2-6"),
        ("sched.slurm.node_not_responding", "node:gpu-b-003"),
        ("storage.slow_io", "storage:pfs-1"), ("job.loss_nan", "job:llm-8b-01"),
    ):
        sim.inject(fault, target, T0)
    sim.step(T0 + 1)

    sim.heal_all(T0 + 2)
    sim.step(T0 + 2 * TIMING.nccl_timeout_s)  # past every consequence that was scheduled

    tel = sim.tel
    # Only the NaN's own line: the pending NCCL failures were called off.
    assert {n: len(v) for n, v in _training_lines(sim).items()} == {"gpu-a-003": 1}
    assert _running(sim) == set(sim.topo.nodes)
    assert not tel.gpu_lost.any() and not tel.gpu_idle.any() and not tel.unreachable.any()
    assert (tel.xid == 0).all() and (tel.throttle == 0).all() and (tel.sm_clock == 1980).all()
    assert (tel.port_state == 4).all() and (tel.nic_error_rate == 0).all()
    assert (tel.slowdown == 1).all() and (tel.storage_factor == 1).all()
    assert not any(math.isnan(v) for v in tel.loss)
    for node in sim.topo.nodes:
        assert len(re.findall(r'gpu="\d"', sim.exposition(node))) == 8 * len(GPU_FAMILIES)
