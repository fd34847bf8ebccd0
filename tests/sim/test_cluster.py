"""Tests for the simulated cluster: entities, dcgm-exporter exposition, faults, kernel logs."""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from vigil.diagnosis.library import FaultLibrary
from vigil.sim.cluster import GPU_METRICS, HGX_PCI_BUS_IDS, InjectError, SimCluster

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


def test_entities_are_each_node_followed_by_its_gpus(cluster: SimCluster) -> None:
    expected = []
    for node in NODES:
        expected += [f"node:{node}"] + [f"gpu:{node}/{g}" for g in range(GPUS)]
    assert cluster.entities() == expected


def test_every_node_starts_with_an_empty_kernel_log(cluster: SimCluster, tmp_path: Path) -> None:
    for node in NODES:
        log = cluster.nodes[node].kernel_log
        assert log == tmp_path / "sim" / node / "kern.log"
        assert log.read_text() == ""


def test_faults_with_an_example_line_are_injectable(library: FaultLibrary, tmp_path: Path) -> None:
    silent = library.get("host.edac_ue").model_copy(update={"example": None})
    modes = [silent if m.id == silent.id else m for m in library]
    cluster = SimCluster(FaultLibrary(modes), tmp_path, nodes=1, gpus_per_node=1)

    assert {m.id for m in cluster.injectable()} == set(library.ids) - {"host.edac_ue"}
    with pytest.raises(InjectError, match=r"unknown fault 'host\.edac_ue'"):
        cluster.inject("host.edac_ue", "node:gpu-a-001", T1)


def test_exposition_has_every_dcgm_metric_for_every_gpu(cluster: SimCluster) -> None:
    families = list(text_string_to_metric_families(cluster.exposition("gpu-a-001")))

    assert [(f.name, f.type) for f in families] == [(m, kind) for m, kind, _ in GPU_METRICS]
    for family in families:
        assert sorted(int(s.labels["gpu"]) for s in family.samples) == list(range(GPUS))


def test_exposition_carries_dcgm_exporter_labels(cluster: SimCluster) -> None:
    uuids: set[str] = set()
    for node in NODES:
        samples = _samples(cluster.exposition(node))
        for gpu in range(GPUS):
            labels, _ = samples[("DCGM_FI_DEV_GPU_TEMP", str(gpu))]
            assert labels["Hostname"] == node
            assert labels["pci_bus_id"] == HGX_PCI_BUS_IDS[gpu]
            assert labels["device"] == f"nvidia{gpu}"
            assert labels["modelName"] == "NVIDIA H100 80GB HBM3"
            assert UUID.match(labels["UUID"]), labels["UUID"]
            uuids.add(labels["UUID"])
            # Every metric of one GPU carries the same identity.
            for metric, _, _ in GPU_METRICS:
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
    counters = [m for m, kind, _ in GPU_METRICS if kind == "counter"]
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


def test_host_fault_on_a_node_writes_its_line_and_leaves_gpus_alone(cluster: SimCluster) -> None:
    before = cluster.exposition("gpu-a-002")

    injection = cluster.inject("host.oom_kill", "node:gpu-a-002", T1)

    match = JOURNAL_LINE.match(injection.log_line)
    assert match, injection.log_line
    assert re.match(r"Out of memory: Killed process \d+ \(python\)", match["message"])
    assert cluster.exposition("gpu-a-002") == before


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


def test_unknown_target_for_a_host_fault_lists_nodes_and_gpus(cluster: SimCluster) -> None:
    with pytest.raises(InjectError) as raised:
        cluster.inject("host.oom_kill", "node:nowhere", T1)

    listed = set(str(raised.value).split("one of: ")[1].split(", "))
    assert listed == set(cluster.entities())


@pytest.mark.parametrize("target", ["gpu:gpu-a-001/8", "gpu:gpu-a-001", "gpu-a-001", ""])
def test_malformed_or_missing_gpu_target_is_rejected(cluster: SimCluster, target: str) -> None:
    with pytest.raises(InjectError, match="unknown target"):
        cluster.inject("gpu.xid.13", target, T1)


def test_gpu_fault_on_a_node_target_is_rejected(cluster: SimCluster) -> None:
    with pytest.raises(InjectError, match=r"node:gpu-a-001 is a node; this fault needs a GPU"):
        cluster.inject("gpu.xid.79", "node:gpu-a-001", T1)

    assert _log_lines(cluster, "gpu-a-001") == []
    assert _value(cluster, "gpu-a-001", "DCGM_FI_DEV_XID_ERRORS", 0) == 0
