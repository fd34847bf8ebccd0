"""Tests for the simulated cluster: entities, dcgm-exporter exposition, faults, logs, time."""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from vigil.diagnosis.library import FaultLibrary
from vigil.sim.cluster import KERNEL_NOISE, InjectError, SimCluster
from vigil.sim.effects import CONTROLLER, Timing, effect_for
from vigil.sim.logs import KERNEL, SCHEDULER, TRAINING
from vigil.sim.telemetry import GPU_FAMILIES
from vigil.sim.topology import GPU_PCI, ClusterSpec

NODES = ("gpu-a-001", "gpu-a-002")
GPUS = 8
T1 = 1_718_000_100.25  # a time after the cluster fixture's start, with a sub-second part
UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# `journalctl -k -o short-iso-precise`: ISO time with microseconds and offset, host, "kernel:".
JOURNAL_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:?\d\d) (?P<host>\S+) kernel: "
    r"(?P<message>\S.*)$"
)

Samples = dict[tuple[str, str], tuple[dict[str, str], float]]


def _samples(text: str) -> Samples:
    """(metric family, gpu index) -> (labels, value) for every sample of an exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (family.name, sample.labels["gpu"])
            assert key not in out, f"two samples for {key}"
            out[key] = (sample.labels, sample.value)
    return out


def _value(cluster: SimCluster, node: str, metric: str, gpu: int) -> float:
    return _samples(cluster.exposition(node))[(metric, str(gpu))][1]


def _log_lines(cluster: SimCluster, node: str) -> list[str]:
    return cluster.nodes[node].kernel_log.read_text().splitlines()


def test_entities_are_each_node_with_its_parts_then_switches_storage_and_the_job(
    cluster: SimCluster,
) -> None:
    expected = []
    for node in NODES:
        expected += [f"node:{node}"] + [f"gpu:{node}/{g}" for g in range(GPUS)]
        expected += [f"nic:{node}/mlx5_{k}" for k in range(8)]
    expected += [f"switch:leaf-1-{k}" for k in range(8)]
    expected += ["storage:pfs-1", "storage:obj-1", "job:llm-8b-01"]
    assert cluster.entities() == expected


def test_every_host_starts_with_empty_logs(cluster: SimCluster, tmp_path: Path) -> None:
    expected = [(tmp_path / "sim" / n / "kern.log", n, KERNEL) for n in NODES]
    expected += [(tmp_path / "sim" / n / "train.log", n, TRAINING) for n in NODES]
    expected += [(tmp_path / "sim" / CONTROLLER / "slurmctld.log", CONTROLLER, SCHEDULER)]

    assert cluster.log_files() == expected
    for node in NODES:
        assert cluster.nodes[node].kernel_log == tmp_path / "sim" / node / "kern.log"
        assert cluster.nodes[node].training_log == tmp_path / "sim" / node / "train.log"
    for path, _, _ in expected:
        assert path.read_text() == ""


def test_every_mode_with_an_effect_is_injectable(
    cluster: SimCluster, library: FaultLibrary
) -> None:
    injectable = [m.id for m in cluster.injectable()]

    assert injectable == [m.id for m in library if effect_for(m) is not None]
    # Modes without an example line play too, through what they do to telemetry...
    assert {"job.straggler", "net.ib.port_errors", "storage.slow_io"} <= set(injectable)
    # ...and the ones the simulator cannot express are refused by name.
    for fault in ("job.checkpoint_slow", "sched.slurm.node_down"):
        assert fault in library
        assert fault not in injectable
        with pytest.raises(InjectError, match=rf"unknown fault '{re.escape(fault)}'"):
            cluster.inject(fault, "node:gpu-a-001", T1)


def test_a_mode_the_simulator_does_not_know_plays_its_example_line(
    library: FaultLibrary, tmp_path: Path
) -> None:
    base = library.get("net.ib.port_errors")
    logged = base.model_copy(update={"id": "net.ib.custom", "example": "mlx5: odd {node}"})
    silent = base.model_copy(update={"id": "net.ib.silent"})
    cluster = SimCluster(FaultLibrary([*library, logged, silent]), tmp_path, nodes=1)

    assert "net.ib.silent" not in {m.id for m in cluster.injectable()}
    injection = cluster.inject("net.ib.custom", "node:gpu-a-001", T1)
    assert injection.log_line.endswith(" gpu-a-001 kernel: mlx5: odd gpu-a-001")
    assert injection.truth is not None
    assert injection.truth.nodes == ("gpu-a-001",)


def test_exposition_has_every_dcgm_metric_for_every_gpu(cluster: SimCluster) -> None:
    families = list(text_string_to_metric_families(cluster.exposition("gpu-a-001")))

    assert [(f.name, f.type) for f in families] == [(m, kind) for m, kind, *_ in GPU_FAMILIES]
    for family in families:
        assert sorted(int(s.labels["gpu"]) for s in family.samples) == list(range(GPUS))


def test_exposition_carries_dcgm_exporter_labels(cluster: SimCluster) -> None:
    uuids: set[str] = set()
    for node in NODES:
        samples = _samples(cluster.exposition(node))
        for gpu in range(GPUS):
            labels, _ = samples[("DCGM_FI_DEV_GPU_TEMP", str(gpu))]
            assert labels["Hostname"] == node
            assert labels["pci_bus_id"] == GPU_PCI[gpu]
            assert labels["device"] == f"nvidia{gpu}"
            assert labels["modelName"] == "NVIDIA H100 80GB HBM3"
            assert UUID.match(labels["UUID"]), labels["UUID"]
            uuids.add(labels["UUID"])
            # Every metric of one GPU carries the same identity.
            for metric, *_ in GPU_FAMILIES:
                assert samples[(metric, str(gpu))][0] == labels
    assert len(uuids) == len(NODES) * GPUS


def test_exposition_values_look_like_a_busy_gpu(cluster: SimCluster) -> None:
    samples = _samples(cluster.exposition("gpu-a-002"))
    for gpu in map(str, range(GPUS)):
        assert samples[("DCGM_FI_DEV_SM_CLOCK", gpu)][1] == 1980
        assert 0 <= samples[("DCGM_FI_DEV_GPU_UTIL", gpu)][1] <= 100
        assert 30 < samples[("DCGM_FI_DEV_GPU_TEMP", gpu)][1] < 90
        assert samples[("DCGM_FI_DEV_XID_ERRORS", gpu)][1] == 0


def test_step_changes_the_noisy_metrics_and_keeps_counters_monotonic(
    cluster: SimCluster,
) -> None:
    before = _samples(cluster.exposition("gpu-a-001"))
    steps = [_samples(cluster.exposition("gpu-a-001"))]
    for i in range(1, 6):
        cluster.step(T1 + 15 * i)
        steps.append(_samples(cluster.exposition("gpu-a-001")))
    after = steps[-1]

    noisy = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_FB_USED")
    for metric in noisy:
        assert [before[(metric, str(g))][1] for g in range(GPUS)] != [
            after[(metric, str(g))][1] for g in range(GPUS)
        ], metric
    for key in before:
        if key[0] in ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK"):
            assert after[key][1] == before[key][1]
    counters = [m for m, kind, *_ in GPU_FAMILIES if kind == "counter"]
    for earlier, later in itertools.pairwise(steps):
        for metric in counters:
            for g in map(str, range(GPUS)):
                assert later[(metric, g)][1] >= earlier[(metric, g)][1]


def test_same_seed_gives_the_same_telemetry(library: FaultLibrary, tmp_path: Path) -> None:
    def run(seed: int, folder: str) -> list[str]:
        sim = SimCluster(library, tmp_path / folder, nodes=2, gpus_per_node=4, seed=seed, now=T1)
        for i in range(3):
            sim.step(T1 + i)
        return [sim.exposition(node) for node in NODES]

    assert run(7, "a") == run(7, "b")
    assert run(7, "a") != run(8, "c")


def test_nodes_have_different_telemetry(cluster: SimCluster) -> None:
    assert cluster.exposition("gpu-a-001") != cluster.exposition("gpu-a-002")


def test_inject_appends_a_journalctl_kernel_line(cluster: SimCluster) -> None:
    injection = cluster.inject("gpu.xid.79", "gpu:gpu-a-002/3", T1)

    assert (injection.fault_id, injection.target, injection.injected_at) == (
        "gpu.xid.79", "gpu:gpu-a-002/3", T1,
    )
    assert _log_lines(cluster, "gpu-a-002") == [injection.log_line]
    assert _log_lines(cluster, "gpu-a-001") == []
    match = JOURNAL_LINE.match(injection.log_line)
    assert match, injection.log_line
    assert datetime.fromisoformat(match["time"]).timestamp() == pytest.approx(T1, abs=1e-6)
    assert match["host"] == "gpu-a-002"
    # GPU 3 of an HGX board is 00000000:5D:00.0; NVRM prints it as DDDD:bb:dd.
    assert re.fullmatch(
        r"NVRM: Xid \(PCI:0000:5d:00\): 79, pid=\d+, name=python, GPU has fallen off the bus\.",
        match["message"],
    ), match["message"]


@pytest.mark.parametrize(
    ("gpu", "pci"), [(0, "0000:18:00"), (3, "0000:5d:00"), (5, "0000:ab:00"), (7, "0000:db:00")]
)
def test_xid_line_names_the_gpu_by_its_pci_address(
    cluster: SimCluster, gpu: int, pci: str
) -> None:
    injection = cluster.inject("gpu.xid.13", f"gpu:gpu-a-001/{gpu}", T1)

    assert f"NVRM: Xid (PCI:{pci}): 13, " in injection.log_line
    # ...which is the exposition's pci_bus_id label of the same GPU, shortened.
    labels, _ = _samples(cluster.exposition("gpu-a-001"))[("DCGM_FI_DEV_XID_ERRORS", str(gpu))]
    domain, bus, device = labels["pci_bus_id"].lower().split(":")
    assert pci == f"{domain[-4:]}:{bus}:{device.split('.')[0]}"


def test_each_injection_gets_a_new_pid_and_its_own_line(cluster: SimCluster) -> None:
    first = cluster.inject("gpu.xid.13", "gpu:gpu-a-001/0", T1)
    second = cluster.inject("host.oom_kill", "node:gpu-a-001", T1 + 1)

    xid_pid = re.search(r"pid=(\d+)", first.log_line)
    oom_pid = re.search(r"Killed process (\d+)", second.log_line)
    assert xid_pid and oom_pid
    assert xid_pid[1] != oom_pid[1]
    assert _log_lines(cluster, "gpu-a-001") == [first.log_line, second.log_line]


def test_xid_79_takes_the_gpu_out_of_the_exposition(cluster: SimCluster) -> None:
    cluster.inject("gpu.xid.79", "gpu:gpu-a-001/5", T1)
    cluster.step(T1 + 15)  # it stays gone: dcgm-exporter cannot see a GPU off the bus

    for family in text_string_to_metric_families(cluster.exposition("gpu-a-001")):
        gpus = sorted(int(s.labels["gpu"]) for s in family.samples)
        assert gpus == [0, 1, 2, 3, 4, 6, 7], family.name
    other = _samples(cluster.exposition("gpu-a-002"))
    assert ("DCGM_FI_DEV_GPU_TEMP", "5") in other


@pytest.mark.parametrize(("fault", "xid"), [("gpu.xid.13", 13), ("gpu.xid.48", 48)])
def test_xid_sets_the_xid_errors_gauge_of_that_gpu_only(
    cluster: SimCluster, fault: str, xid: int
) -> None:
    cluster.inject(fault, "gpu:gpu-a-001/2", T1)
    cluster.step(T1 + 15)  # the gauge holds the last Xid seen, not a per-interval value

    samples = _samples(cluster.exposition("gpu-a-001"))
    xids = {g: samples[("DCGM_FI_DEV_XID_ERRORS", str(g))][1] for g in range(GPUS)}
    assert xids == {g: (xid if g == 2 else 0) for g in range(GPUS)}
    assert _value(cluster, "gpu-a-002", "DCGM_FI_DEV_XID_ERRORS", 2) == 0


def test_xid_48_counts_a_double_bit_ecc_error(cluster: SimCluster) -> None:
    metric = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
    before = [_value(cluster, "gpu-a-001", metric, g) for g in range(GPUS)]

    cluster.inject("gpu.xid.48", "gpu:gpu-a-001/6", T1)

    after = [_value(cluster, "gpu-a-001", metric, g) for g in range(GPUS)]
    assert after == [b + (1 if g == 6 else 0) for g, b in enumerate(before)]


def test_oom_kill_writes_its_line_and_the_job_dies_on_the_next_step(cluster: SimCluster) -> None:
    before = cluster.exposition("gpu-a-002")

    injection = cluster.inject("host.oom_kill", "node:gpu-a-002", T1)

    match = JOURNAL_LINE.match(injection.log_line)
    assert match, injection.log_line
    assert re.match(r"Out of memory: Killed process \d+ \(python\)", match["message"])
    # Consequences wait for step(): until then nothing else has changed.
    assert cluster.exposition("gpu-a-002") == before
    assert cluster.trainer("gpu-a-001") is not None

    cluster.step(T1 + Timing().crash_propagation_s + 0.5)

    for node in NODES:
        assert cluster.trainer(node) is None
        utils = [_value(cluster, node, "DCGM_FI_DEV_GPU_UTIL", g) for g in range(GPUS)]
        assert max(utils) <= 2, node
    # The peer, not the node whose process was killed, reports the collective failure.
    assert cluster.nodes["gpu-a-002"].training_log.read_text() == ""
    (line,) = cluster.nodes["gpu-a-001"].training_log.read_text().splitlines()
    assert "[Rank 0] RuntimeError: NCCL error" in line


def test_injection_carries_the_ground_truth(cluster: SimCluster) -> None:
    injection = cluster.inject("gpu.xid.13", "gpu:gpu-a-001/2", T1, duration_s=120.0,
                               scenario="xid13")

    truth = injection.truth
    assert truth is not None
    assert (truth.scenario, truth.fault_id, truth.layer, truth.root_entity) == (
        "xid13", "gpu.xid.13", "compute", "gpu:gpu-a-001/2")
    assert (truth.onset, truth.end) == (T1, T1 + 120.0)
    assert truth.nodes == NODES  # a crash takes the whole job down
    ranks = {f"rank:llm-8b-01/{r}" for r in range(16)}
    assert set(truth.affected) == {"gpu:gpu-a-001/2", "node:gpu-a-001", "node:gpu-a-002",
                                   "job:llm-8b-01", "pod:train/llm-8b-01-worker-0",
                                   "pod:train/llm-8b-01-worker-1"} | ranks


def test_a_fault_heals_when_its_duration_ends(cluster: SimCluster) -> None:
    cluster.inject("gpu.xid.79", "gpu:gpu-a-001/5", T1, duration_s=60.0)
    cluster.step(T1 + Timing().nccl_timeout_s + 1)
    assert cluster.trainer("gpu-a-002") is None
    assert ("DCGM_FI_DEV_GPU_TEMP", "5") not in _samples(cluster.exposition("gpu-a-001"))

    cluster.step(T1 + 60)

    assert ("DCGM_FI_DEV_GPU_TEMP", "5") in _samples(cluster.exposition("gpu-a-001"))
    assert _value(cluster, "gpu-a-001", "DCGM_FI_DEV_XID_ERRORS", 5) == 0
    assert cluster.trainer("gpu-a-001") is not None
    assert cluster.trainer("gpu-a-002") is not None


def test_routine_training_lines_come_every_log_interval(
    library: FaultLibrary, tmp_path: Path
) -> None:
    cluster = SimCluster(library, tmp_path, nodes=2, now=T1, log_interval_s=10.0)
    for k in range(1, 7):
        cluster.step(T1 + 5 * k)

    lines = cluster.nodes["gpu-a-001"].training_log.read_text().splitlines()
    assert len(lines) == 3  # at +10, +20 and +30 s
    iterations = [int(m[1]) for line in lines if (m := re.search(r"iteration (\d+) \|", line))]
    assert len(iterations) == 3
    assert iterations == sorted(iterations) and iterations[0] > 0
    assert all(re.search(r"\| step time \d+\.\d{3} s \| loss \d+\.\d{4} \|", x) for x in lines)
    # Rank 0 speaks for the job; the other node writes nothing.
    assert cluster.nodes["gpu-a-002"].training_log.read_text() == ""


def test_kernel_noise_is_only_harmless_known_lines(library: FaultLibrary, tmp_path: Path) -> None:
    cluster = SimCluster(library, tmp_path, spec=ClusterSpec(racks=1, nodes_per_rack=8),
                         now=T1, log_interval_s=10.0)
    for k in range(1, 41):
        cluster.step(T1 + 10 * k)

    messages = []
    for node in cluster.nodes.values():
        for line in node.kernel_log.read_text().splitlines():
            match = JOURNAL_LINE.match(line)
            assert match, line
            messages.append(match["message"])
    # 2% of 8 nodes over 40 intervals: a few lines, and never one a fault signal matches.
    assert messages, "the check below would pass vacuously on an empty log"
    assert set(messages) <= set(KERNEL_NOISE)
    signals = [s.regex for mode in library for s in mode.signals.logs]
    assert not [m for m in messages if any(regex.search(m) for regex in signals)]


def test_unknown_fault_lists_the_valid_ones(cluster: SimCluster) -> None:
    with pytest.raises(InjectError) as raised:
        cluster.inject("gpu.xid.999", "gpu:gpu-a-001/0", T1)

    message = str(raised.value)
    assert "'gpu.xid.999'" in message
    for mode in cluster.injectable():
        assert mode.id in message
    assert _log_lines(cluster, "gpu-a-001") == []


def test_unknown_target_for_a_gpu_fault_lists_the_gpus(cluster: SimCluster) -> None:
    with pytest.raises(InjectError) as raised:
        cluster.inject("gpu.xid.79", "gpu:gpu-a-009/0", T1)

    message = str(raised.value)
    assert "'gpu:gpu-a-009/0'" in message
    listed = set(message.split("one of: ")[1].split(", "))
    assert listed == {e for e in cluster.entities() if e.startswith("gpu:")}


@pytest.mark.parametrize(
    ("fault", "kind", "valid"),
    [
        ("host.oom_kill", "node", {"node:gpu-a-001", "node:gpu-a-002"}),
        ("net.ib.link_down", "nic", {f"nic:{n}/mlx5_{k}" for n in NODES for k in range(8)}),
        ("net.ib.port_errors", "switch", {f"switch:leaf-1-{k}" for k in range(8)}),
        ("storage.slow_io", "storage", {"storage:pfs-1", "storage:obj-1"}),
        ("job.cuda_oom", "job", {"job:llm-8b-01"}),
    ],
)
def test_unknown_target_lists_the_entities_of_the_faults_kind(
    cluster: SimCluster, fault: str, kind: str, valid: set[str]
) -> None:
    with pytest.raises(InjectError) as raised:
        cluster.inject(fault, "gpu:gpu-a-001/0", T1)

    message = str(raised.value)
    assert message.startswith(f"unknown target 'gpu:gpu-a-001/0'; {fault} is injected at a {kind}")
    assert set(message.split("one of: ")[1].split(", ")) == valid


def test_a_long_list_of_valid_targets_is_cut_short(library: FaultLibrary, tmp_path: Path) -> None:
    cluster = SimCluster(library, tmp_path, nodes=8)

    with pytest.raises(InjectError) as raised:
        cluster.inject("gpu.xid.79", "gpu:gpu-a-009/0", T1)

    listed, _, rest = str(raised.value).split("one of: ")[1].partition(" … ")
    gpus = [e for e in cluster.entities() if e.startswith("gpu:")]
    assert listed.split(", ") == gpus[:40]
    assert rest == "(64 in all)"


@pytest.mark.parametrize("target", ["gpu:gpu-a-001/8", "gpu:gpu-a-001", "gpu-a-001", ""])
def test_malformed_or_missing_gpu_target_is_rejected(cluster: SimCluster, target: str) -> None:
    with pytest.raises(InjectError, match="unknown target"):
        cluster.inject("gpu.xid.13", target, T1)


def test_gpu_fault_on_a_node_target_is_rejected(cluster: SimCluster) -> None:
    expected = r"^unknown target 'node:gpu-a-001'; gpu\.xid\.79 is injected at a gpu, one of: "
    with pytest.raises(InjectError, match=expected):
        cluster.inject("gpu.xid.79", "node:gpu-a-001", T1)

    assert _log_lines(cluster, "gpu-a-001") == []
    assert _value(cluster, "gpu-a-001", "DCGM_FI_DEV_XID_ERRORS", 0) == 0
