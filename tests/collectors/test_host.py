"""Host collector tests: a fixture /proc and /sys tree, bad files, hung mounts, this host."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from collector_fakes import RecordingBus, Tally
from vigil.collectors.host import HostCollector

from vigil.bus import Topic
from vigil.otlp import MetricBatch, decode_metrics

NOW = 1_718_000_000.0
FIXTURE = Path(__file__).parent / "data" / "host"

Values = dict[tuple[str, frozenset[tuple[str, str]]], float]
MakeCollector = Callable[..., HostCollector]


@pytest.fixture
def make_collector(bus: RecordingBus, tally: Tally) -> MakeCollector:
    def make(root: Path | str = FIXTURE, mount_timeout_s: float = 5.0) -> HostCollector:
        collector = HostCollector(bus, "gpu-a-017", interval_s=3600.0, root=str(root),
                                  mount_timeout_s=mount_timeout_s)
        collector.counters = tally.component
        return collector

    return make


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """The fixture tree, copied so a test can spoil files in it."""
    root = tmp_path / "host"
    shutil.copytree(FIXTURE, root, symlinks=True)
    return root


def _batch(bus: RecordingBus, index: int = -1) -> MetricBatch:
    message = bus.published[index]
    assert (message.topic, message.key) == (Topic.METRICS, "gpu-a-017")
    (batch,) = decode_metrics(message.value)
    return batch


def _values(batch: MetricBatch) -> Values:
    """Samples by name and labels, as the exporter would label them (without vigil.entity)."""
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if k != "vigil.entity")):
            s.value for s in batch.samples}


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def _minimal_root(tmp_path: Path, mounts: str = "") -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    shutil.copy(FIXTURE / "proc" / "stat", root / "proc" / "stat")
    (root / "proc" / "mounts").write_text(mounts)
    return root


# --- the fixture tree ---------------------------------------------------------------------


def test_one_batch_per_interval_for_the_node(make_collector: MakeCollector, bus: RecordingBus,
                                             tally: Tally) -> None:
    make_collector().collect(NOW)

    assert len(bus.published) == 1
    batch = _batch(bus)
    assert batch.resource == {"host.name": "gpu-a-017", "vigil.entity": "node:gpu-a-017"}
    assert {s.timestamp for s in batch.samples} == {NOW}
    assert tally.totals() == {"received": len(batch.samples), "sent": len(batch.samples),
                              "dropped": 0, "errored": 0}


def test_cpu_load_and_kernel_counters(make_collector: MakeCollector, bus: RecordingBus) -> None:
    make_collector().collect(NOW)
    values = _values(_batch(bus))

    # /proc/stat ticks are 1/100 s; the aggregate "cpu" line is not repeated as a CPU.
    assert values[_key("node_cpu_seconds_total", cpu="0", mode="user")] == 211630.17
    assert values[_key("node_cpu_seconds_total", cpu="3", mode="idle")] == 3010338.14
    assert values[_key("node_cpu_seconds_total", cpu="1", mode="softirq")] == 1004.11
    assert values[_key("node_cpu_guest_seconds_total", cpu="2", mode="nice")] == 0.0
    cpus = {dict(labels)["cpu"] for name, labels in values if name == "node_cpu_seconds_total"}
    assert cpus == {"0", "1", "2", "3"}
    assert values[_key("node_context_switches_total")] == 21787310452
    assert values[_key("node_boot_time_seconds")] == 1717400000
    assert values[_key("node_procs_blocked")] == 2
    assert values[_key("node_intr_total")] == 9810234411
    assert (values[_key("node_load1")], values[_key("node_load15")]) == (38.52, 36.41)


def test_memory_named_as_node_exporter(make_collector: MakeCollector, bus: RecordingBus) -> None:
    make_collector().collect(NOW)
    values = _values(_batch(bus))

    assert values[_key("node_memory_MemTotal_bytes")] == 2113470688 * 1024
    assert values[_key("node_memory_MemAvailable_bytes")] == 1401235560 * 1024
    assert values[_key("node_memory_Active_anon_bytes")] == 301223112 * 1024
    assert values[_key("node_memory_HugePages_Total")] == 0  # a count, not kB: no _bytes


def test_disks_skip_partitions_and_loops(make_collector: MakeCollector,
                                         bus: RecordingBus) -> None:
    make_collector().collect(NOW)
    values = _values(_batch(bus))

    assert values[_key("node_disk_read_bytes_total", device="nvme0n1")] == 310223145 * 512
    assert values[_key("node_disk_io_time_seconds_total", device="nvme1n1")] == 20113.445
    assert values[_key("node_disk_io_now", device="nvme1n1")] == 3
    assert values[_key("node_disk_flush_requests_total", device="nvme0n1")] == 223344
    devices = {dict(labels)["device"] for name, labels in values if name.startswith("node_disk")}
    assert devices == {"nvme0n1", "nvme1n1"}


def test_network_counters_and_link(make_collector: MakeCollector, bus: RecordingBus) -> None:
    make_collector().collect(NOW)
    values = _values(_batch(bus))

    eth0 = {"device": "eth0"}
    assert values[_key("node_network_receive_bytes_total", **eth0)] == 98811234455012
    assert values[_key("node_network_receive_errs_total", **eth0)] == 3
    assert values[_key("node_network_receive_crc_errors_total", **eth0)] == 3
    assert values[_key("node_network_transmit_colls_total", **eth0)] == 0
    assert values[_key("node_network_speed_bytes", **eth0)] == 100_000 * 125_000
    assert values[_key("node_network_mtu_bytes", **eth0)] == 9000
    assert values[_key("node_network_up", **eth0)] == 1
    assert values[_key("node_network_carrier_changes_total", **eth0)] == 4
    # A pod's veth is left out by default.
    assert not [k for k in values if "veth3a91c2f" in dict(k[1]).values()]


def test_infiniband_ports(make_collector: MakeCollector, bus: RecordingBus) -> None:
    make_collector().collect(NOW)
    values = _values(_batch(bus))

    up, down = {"device": "mlx5_0", "port": "1"}, {"device": "mlx5_1", "port": "1"}
    # The data counters count 4-byte words; node-exporter reports bytes.
    assert values[_key("node_infiniband_port_data_received_bytes_total", **up)] == (
        3390254088311 * 4)
    assert values[_key("node_infiniband_symbol_error_total", **up)] == 12
    assert values[_key("node_infiniband_link_error_recovery_total", **up)] == 1
    assert values[_key("node_infiniband_vl15_dropped_total", **up)] == 0
    assert values[_key("node_infiniband_state_id", **up)] == 4
    assert values[_key("node_infiniband_physical_state_id", **up)] == 5
    assert values[_key("node_infiniband_rate_bytes_per_second", **up)] == 400e9 / 8
    assert values[_key("node_infiniband_hw_out_of_sequence_total", **up)] == 3
    assert values[_key("node_infiniband_hw_local_ack_timeout_err_total", **up)] == 7
    assert values[_key("node_infiniband_state_id", **down)] == 1
    assert values[_key("node_infiniband_link_downed_total", **down)] == 3
    assert not [name for name, _ in values if "lifespan" in name]
    entities = {s.labels.get("vigil.entity") for s in _batch(bus).samples
                if s.name.startswith("node_infiniband_")}
    assert entities == {"nic:gpu-a-017/mlx5_0", "nic:gpu-a-017/mlx5_1"}


def test_edac_and_temperatures(make_collector: MakeCollector, bus: RecordingBus) -> None:
    make_collector().collect(NOW)
    values = _values(_batch(bus))

    assert values[_key("node_edac_correctable_errors_total", controller="0")] == 5
    assert values[_key("node_edac_uncorrectable_errors_total", controller="0")] == 1
    assert values[_key("node_edac_csrow_uncorrectable_errors_total", controller="0",
                       csrow="0")] == 1
    assert values[_key("node_edac_csrow_correctable_errors_total", controller="0",
                       csrow="unknown")] == 0
    assert values[_key("node_thermal_zone_temp", type="x86_pkg_temp", zone="0")] == 61.0
    # The chip is named by its bus path, which survives reboots; hwmon0 may not.
    assert values[_key("node_hwmon_temp_celsius", chip="platform_coretemp_0",
                       sensor="temp1")] == 62.0
    assert values[_key("node_hwmon_temp_celsius", chip="platform_coretemp_0",
                       sensor="temp2")] == 55.0


def test_filesystems_real_ones_only(make_collector: MakeCollector, bus: RecordingBus) -> None:
    make_collector(mount_timeout_s=2.0).collect(NOW)
    values = _values(_batch(bus))

    root = {"device": "/dev/nvme0n1p2", "fstype": "ext4", "mountpoint": "/"}
    stat = os.statvfs(FIXTURE)  # the fixture's "/" is the folder itself
    assert values[_key("node_filesystem_size_bytes", **root)] == stat.f_blocks * stat.f_frsize
    assert values[_key("node_filesystem_files", **root)] == stat.f_files
    assert 0 < values[_key("node_filesystem_avail_bytes", **root)] <= values[
        _key("node_filesystem_free_bytes", **root)]
    assert values[_key("node_filesystem_device_error", **root)] == 0
    assert values[_key("node_filesystem_readonly", **root)] == 0
    # /scratch is listed but not there to ask: an error, as node-exporter reports it.
    scratch = {"device": "10.1.0.5@o2ib:/scratch", "fstype": "lustre", "mountpoint": "/scratch"}
    assert values[_key("node_filesystem_device_error", **scratch)] == 1
    assert _key("node_filesystem_size_bytes", **scratch) not in values
    mountpoints = {dict(labels)["mountpoint"] for name, labels in values
                   if name.startswith("node_filesystem")}
    assert mountpoints == {"/", "/scratch"}  # no proc, sysfs, cgroup, /dev/shm or overlay


def test_counters_and_gauges_are_told_apart(make_collector: MakeCollector,
                                            bus: RecordingBus) -> None:
    make_collector().collect(NOW)
    batch = _batch(bus)

    wrong = [(s.name, s.kind) for s in batch.samples
             if (s.kind == "counter") != s.name.endswith("_total")]
    assert wrong == []


# --- bad and missing input -----------------------------------------------------------------


def test_garbage_is_counted_logged_once_and_skipped(
    make_collector: MakeCollector, bus: RecordingBus, tally: Tally, fixture_copy: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    meminfo = fixture_copy / "proc" / "meminfo"
    meminfo.write_text(meminfo.read_text().replace(" 341987012 kB", " lots kB"))
    stat = fixture_copy / "proc" / "stat"
    stat.write_text(stat.read_text().replace("cpu2 21104120 297", "cpu2 21104120 many"))
    counter = fixture_copy / "sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error"
    counter.write_text("\x00\x17garbage\n")
    rate = fixture_copy / "sys/class/infiniband/mlx5_0/ports/1/rate"
    rate.write_text("fast\n")
    collector = make_collector(fixture_copy)

    with caplog.at_level(logging.WARNING, logger="vigil.collectors.host"):
        collector.collect(NOW)
        collector.collect(NOW + 10)

    assert tally.totals()["errored"] == 2 * 4
    warned = [r for r in caplog.records if r.getMessage() == "unparseable host file skipped"]
    assert sorted(r.path for r in warned) == sorted(  # type: ignore[attr-defined]
        str(p) for p in (meminfo, stat, counter, rate))
    assert [r.detail for r in warned if r.path == str(stat)] == [  # type: ignore[attr-defined]
        "line 4: invalid literal for int() with base 10: 'many'"]
    values = _values(_batch(bus))
    assert _key("node_memory_MemFree_bytes") not in values
    assert values[_key("node_memory_MemTotal_bytes")] == 2113470688 * 1024
    assert not [k for k in values if dict(k[1]).get("cpu") == "2"]
    assert _key("node_cpu_seconds_total", cpu="3", mode="user") in values
    up = {"device": "mlx5_0", "port": "1"}
    assert _key("node_infiniband_symbol_error_total", **up) not in values
    assert _key("node_infiniband_rate_bytes_per_second", **up) not in values
    assert values[_key("node_infiniband_link_downed_total", **up)] == 0


def test_absent_sources_are_skipped_silently(make_collector: MakeCollector, bus: RecordingBus,
                                             tally: Tally, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    collector = make_collector(_minimal_root(tmp_path))

    with caplog.at_level(logging.DEBUG, logger="vigil.collectors"):
        collector.collect(NOW)

    names = {s.name for s in _batch(bus).samples}
    assert "node_cpu_seconds_total" in names
    assert not [n for n in names if n.startswith(("node_infiniband", "node_edac", "node_memory"))]
    assert tally.totals()["errored"] == 0
    assert caplog.records == []


def test_a_root_without_proc_is_refused(bus: RecordingBus, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no proc/stat"):
        HostCollector(bus, "n1", interval_s=10, root=str(tmp_path))


def test_hung_network_mount_reports_an_error_and_does_not_block(
    make_collector: MakeCollector, bus: RecordingBus, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    root = _minimal_root(tmp_path, "fs1:/home /home nfs4 rw,relatime,vers=4.2 0 0\n")
    (root / "home").mkdir()
    server_back = threading.Event()
    asked: list[str] = []
    real_statvfs = os.statvfs

    def statvfs(path: str) -> os.statvfs_result:
        asked.append(path)
        server_back.wait(10)  # what a dead NFS server does to the caller, until it returns
        return real_statvfs(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    collector = make_collector(root, mount_timeout_s=0.05)
    home = {"device": "fs1:/home", "fstype": "nfs4", "mountpoint": "/home"}
    try:
        with caplog.at_level(logging.INFO, logger="vigil.collectors.host"):
            started = time.monotonic()
            collector.collect(NOW)
            collector.collect(NOW + 10)  # still hung: not asked again
            blocked_for = time.monotonic() - started
            assert _values(_batch(bus, 0))[_key("node_filesystem_device_error", **home)] == 1
            assert _values(_batch(bus, 1))[_key("node_filesystem_device_error", **home)] == 1
            assert len(asked) == 1 and blocked_for < 2
            server_back.set()
            deadline = time.monotonic() + 5
            while collector._probing and time.monotonic() < deadline:
                time.sleep(0.01)
            collector.collect(NOW + 20)
    finally:
        server_back.set()

    values = _values(_batch(bus))
    assert values[_key("node_filesystem_device_error", **home)] == 0
    assert values[_key("node_filesystem_size_bytes", **home)] > 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("filesystem not responding") == 1
    assert messages.count("filesystem responding again") == 1


# --- this machine ------------------------------------------------------------------------


def test_this_hosts_proc_and_sys_parse_cleanly(make_collector: MakeCollector, bus: RecordingBus,
                                               tally: Tally) -> None:
    collector = make_collector("/")

    assert collector.read(NOW).garbage == []
    collector.collect(NOW)
    names = {s.name for s in _batch(bus).samples}
    assert {"node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_load1",
            "node_network_receive_bytes_total", "node_filesystem_size_bytes"} <= names
    assert tally.totals()["errored"] == 0


def test_start_collects_at_once_and_shutdown_is_prompt(make_collector: MakeCollector,
                                                       bus: RecordingBus) -> None:
    collector = make_collector()
    collector.start()
    try:
        deadline = time.monotonic() + 5
        while not bus.published and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        started = time.monotonic()
        collector.shutdown()
    assert len(bus.published) == 1
    assert time.monotonic() - started < 1
