"""Tests for the simulated telemetry: array shapes, determinism, what faults change, exposition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vigil.sim.telemetry import (
    ACTIVE,
    GPU_FAMILIES,
    NIC_FAMILIES,
    THERMAL_BIT,
    Telemetry,
)
from vigil.sim.topology import ClusterSpec, SimTopology, build_topology

T0 = 1_718_000_000.0
# Two racks of four nodes, one job per rack: llm-8b-01 on rack a, llm-70b-02 on rack b.
SPEC = ClusterSpec(racks=2, nodes_per_rack=4, nodes_per_group=4, jobs=2)


@pytest.fixture
def topo() -> SimTopology:
    return build_topology(SPEC)


@pytest.fixture
def tel(topo: SimTopology) -> Telemetry:
    return Telemetry(topo, seed=7, now=T0)


def _rows(topo: SimTopology, job: int) -> list[int]:
    return [topo.index[n] for n in topo.jobs[job].nodes]


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of an exposition, parsed as Prometheus does."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_arrays_have_a_row_per_node_and_a_column_per_gpu_or_nic() -> None:
    topo = build_topology(ClusterSpec(racks=2, nodes_per_rack=32, jobs=4))
    tel = Telemetry(topo, seed=1, now=T0)

    for *_, attr in GPU_FAMILIES:
        assert getattr(tel, attr).shape == (64, 8), attr
    for *_, attr in NIC_FAMILIES:
        assert getattr(tel, attr).shape == (64, 8), attr
    for attr in ("load1", "mem_available", "step_time", "compute_time", "iteration", "loss",
                 "checkpoint_s", "job_running", "unreachable"):
        assert getattr(tel, attr).shape == (64,), attr
    assert tel.storage_latency.shape == tel.storage_factor.shape == (2,)
    assert tel.job_running.all()
    assert (tel.port_state == ACTIVE).all()


def test_the_same_seed_gives_the_same_telemetry(topo: SimTopology) -> None:
    def run(seed: int) -> list[str]:
        tel = Telemetry(topo, seed=seed, now=T0)
        for k in range(1, 4):
            tel.step(T0 + 10 * k)
        return [tel.dcgm(n) + tel.node_exporter(n) + (tel.trainer(n) or "") for n in topo.nodes]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_steps_advance_counters_and_training(tel: Telemetry) -> None:
    energy, received = tel.energy.copy(), tel.rcv_bytes.copy()
    assert (tel.iteration == 0).all()

    tel.step(T0 + 60)

    assert (tel.energy > energy).all()
    assert (tel.rcv_bytes > received).all()
    # 60 s at ~1.2 s (8b) and ~4.5 s (70b) per iteration.
    assert tel.iteration[0] == pytest.approx(60 / tel.step_time[0])
    assert 40 < tel.iteration[0] < 60
    assert 10 < tel.iteration[4] < 16
    assert tel.now == T0 + 60


def test_a_thermal_offset_heats_one_gpu_and_sets_its_throttle_bit(tel: Telemetry) -> None:
    tel.gpu_temp_offset[2, 5] = 38.0
    tel.step(T0 + 10)

    others = np.delete(tel.temp[2], 5)
    assert tel.temp[2, 5] > others.max() + 10  # other GPUs may spike briefly by up to 18
    assert tel.throttle[2, 5] == THERMAL_BIT
    assert np.count_nonzero(tel.throttle) == 1
    samples = _samples(tel.dcgm("gpu-a-003"))
    by_gpu = {labels["gpu"]: v for labels, v in samples["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"]}
    assert by_gpu == {str(g): (THERMAL_BIT if g == 5 else 0) for g in range(8)}


def test_a_lost_gpu_is_missing_from_the_dcgm_exposition(tel: Telemetry) -> None:
    tel.gpu_lost[1, 3] = True

    for name, samples in _samples(tel.dcgm("gpu-a-002")).items():
        assert sorted(int(labels["gpu"]) for labels, _ in samples) == [0, 1, 2, 4, 5, 6, 7], name
    assert len(_samples(tel.dcgm("gpu-a-001"))["DCGM_FI_DEV_GPU_TEMP"]) == 8


def test_a_slow_node_slows_its_whole_job_but_computes_slowly_alone(
    tel: Telemetry, topo: SimTopology
) -> None:
    job_a, job_b = _rows(topo, 0), _rows(topo, 1)
    tel.step(T0 + 10)
    step, compute = tel.step_time.copy(), tel.compute_time.copy()

    tel.slowdown[job_a[1]] = 1.5
    tel.step(T0 + 20)

    # Synchronous data parallelism: every node of the job waits for the straggler.
    assert len(set(tel.step_time[job_a])) == 1
    assert tel.step_time[job_a] == pytest.approx(step[job_a] * 1.5, rel=0.05)
    assert tel.compute_time[job_a[1]] == pytest.approx(compute[job_a[1]] * 1.5, rel=0.05)
    others = [r for r in job_a if r != job_a[1]]
    assert tel.compute_time[others] == pytest.approx(compute[others], rel=0.05)
    assert tel.step_time[job_b] == pytest.approx(step[job_b], rel=0.05)


def test_loss_goes_nan_on_the_flagged_nodes(tel: Telemetry) -> None:
    tel.loss_nan[0] = True
    tel.step(T0 + 10)

    (_, value), = _samples(tel.trainer("gpu-a-001") or "")["training_loss"]
    assert math.isnan(value)
    (_, value), = _samples(tel.trainer("gpu-a-002") or "")["training_loss"]
    assert 2.0 < value < 9.0


def test_a_slow_filesystem_raises_latency_and_checkpoint_time(tel: Telemetry) -> None:
    tel.step(T0 + 10)
    latency, throughput = tel.storage_latency.copy(), tel.storage_throughput.copy()
    checkpoint = tel.checkpoint_s.copy()

    tel.storage_factor[0] = 8.0  # pfs-1, where the jobs checkpoint
    tel.step(T0 + 20)

    assert tel.storage_latency[0] > 4 * latency[0]
    assert tel.storage_throughput[0] == pytest.approx(throughput[0] / 8)
    assert tel.checkpoint_s.min() > 6 * checkpoint.max()
    assert tel.storage_latency[1] < 2 * latency[1]  # obj-1 is fine
    (_, value), = _samples(tel.storage("pfs-1"))["storage_operation_latency_seconds"]
    assert value == pytest.approx(tel.storage_latency[0], rel=1e-5)


def test_a_stopped_job_idles_its_gpus_and_has_no_trainer_metrics(
    tel: Telemetry, topo: SimTopology
) -> None:
    rows = _rows(topo, 0)
    tel.job_running[rows] = False
    tel.step(T0 + 10)

    assert tel.util[rows].max() <= 2
    assert (tel.sm_clock[rows] == 345).all()
    assert (tel.fb_used[rows] == 0).all()
    assert tel.trainer("gpu-a-001") is None
    assert tel.util[_rows(topo, 1)].min() > 50
    assert tel.trainer("gpu-b-001") is not None


def test_a_node_without_a_job_has_no_trainer_metrics() -> None:
    topo = build_topology(ClusterSpec(racks=1, nodes_per_rack=3, jobs=2))
    tel = Telemetry(topo, seed=7, now=T0)

    assert topo.job_of.get("gpu-a-003") is None
    assert tel.trainer("gpu-a-003") is None
    assert tel.util[2].max() <= 2


def test_every_exposition_parses_with_the_declared_families(
    tel: Telemetry, topo: SimTopology
) -> None:
    tel.step(T0 + 10)
    for node in topo.nodes:
        dcgm = list(text_string_to_metric_families(tel.dcgm(node)))
        assert [(f.name, f.type) for f in dcgm] == [(n, t) for n, t, *_ in GPU_FAMILIES]
        assert all(len(f.samples) == 8 for f in dcgm)
        exporter = _samples(tel.node_exporter(node))
        # prometheus_client adds _total to counter samples; the names already carry it.
        assert list(exporter) == ["node_load1", "node_memory_MemAvailable_bytes"] + [
            n for n, *_ in NIC_FAMILIES
        ]
        for name, *_ in NIC_FAMILIES:
            assert [labels for labels, _ in exporter[name]] == [
                {"device": f"mlx5_{k}", "port": "1"} for k in range(8)
            ]
        trainer = _samples(tel.trainer(node) or "")
        assert sorted(trainer) == sorted([
            "training_step_time_seconds", "training_compute_time_seconds",
            "training_iteration_total", "training_tokens_per_second", "training_loss",
            "training_checkpoint_duration_seconds",
        ])
        assert {labels["job"] for s in trainer.values() for labels, _ in s} == {topo.job_of[node]}
    for system in topo.storage:
        storage = _samples(tel.storage(system))
        assert sorted(storage) == ["storage_operation_latency_seconds",
                                   "storage_throughput_bytes_per_second"]
        assert storage["storage_operation_latency_seconds"][0][0] == {"system": system}


def test_the_port_state_gauge_reports_down_ports(tel: Telemetry) -> None:
    tel.port_state[0, 2] = 1.0

    states = _samples(tel.node_exporter("gpu-a-001"))["node_infiniband_state_id"]
    assert [v for _, v in states] == [4, 4, 1, 4, 4, 4, 4, 4]
