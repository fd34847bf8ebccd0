"""Debian's prometheus-node-exporter and the host collector read the same files the same way:
same metric names, label keys, kinds and units, on this host and on the fixture tree."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from vigil.collectors.host import DEFAULT_NET_EXCLUDE, HostCollector
from vigil.collectors.prometheus_scrape import parse_exposition

from vigil.broker import free_port
from vigil.otlp import MetricSample, decode_metrics

pytestmark = pytest.mark.integration

BINARY = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
FIXTURE = Path(__file__).parents[1] / "collectors" / "data" / "host"
# What node-exporter says about itself and what it adds beside the readings (info series).
_ITS_OWN = ("node_scrape_", "node_exporter_", "node_disk_info", "node_network_info",
            "node_infiniband_info", "node_hwmon_chip_names", "node_hwmon_sensor_label")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Series = dict[tuple[str, frozenset[tuple[str, str]]], MetricSample]


@contextmanager
def _node_exporter(*args: str) -> Iterator[str]:
    """node-exporter on a free loopback port with only the named collectors; yields its URL."""
    if BINARY is None:
        pytest.skip("prometheus-node-exporter is not installed (deploy/setup.sh installs it)")
    port = free_port()
    process = subprocess.Popen(
        [BINARY, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _NO_PROXY.open(url, timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    _, err = process.communicate(timeout=5)
                    pytest.fail(f"node-exporter did not start: {err}")
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=10)


def _scrape(url: str) -> Series:
    with _NO_PROXY.open(url, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s
            for s in parse_exposition(text, time.time()) if not s.name.startswith(_ITS_OWN)}


class _Kept:
    """A publisher that keeps the last message."""

    value = b""

    def publish(self, topic: str, value: bytes, key: str | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        self.value = value


def _collect(root: str) -> Series:
    kept = _Kept()
    HostCollector(kept, "this-host", interval_s=10, root=root).collect(time.time())
    (batch,) = decode_metrics(kept.value)
    # vigil.entity is Vigil's own addition (the NIC an IB counter is about): node-exporter
    # has no such label, so it is left out of the comparison.
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if k != "vigil.entity")): s
            for s in batch.samples}


def _families(series: Series) -> dict[str, set[frozenset[str]]]:
    """Each metric name with the label-key sets its series use."""
    families: dict[str, set[frozenset[str]]] = {}
    for name, labels in series:
        families.setdefault(name, set()).add(frozenset(k for k, _ in labels))
    return families


def _assert_same_shape(ours: Series, theirs: Series, required: set[str]) -> None:
    """Shared names carry the same label keys and kind; `required` names are in both."""
    our_families, their_families = _families(ours), _families(theirs)
    shared = set(our_families) & set(their_families)
    assert required <= shared, f"missing from one side: {sorted(required - shared)}"
    for name in shared:
        assert our_families[name] == their_families[name], name
    kinds = {(key[0], ours[key].kind, theirs[key].kind) for key in set(ours) & set(theirs)}
    assert {(name, a, b) for name, a, b in kinds if a != b} == set()


def test_this_host_reads_as_node_exporter_reads_it() -> None:
    with _node_exporter("--collector.cpu", "--collector.meminfo", "--collector.loadavg",
                        "--collector.stat", "--collector.netdev", "--collector.netclass",
                        "--collector.diskstats", "--collector.filesystem") as url:
        started = time.monotonic()
        theirs = _scrape(url)
        ours = _collect("/")
        elapsed = time.monotonic() - started

    _assert_same_shape(ours, theirs, {
        "node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes",
        "node_load1", "node_context_switches_total", "node_procs_running",
        "node_network_receive_bytes_total", "node_network_transmit_packets_total",
        "node_network_up", "node_filesystem_size_bytes", "node_filesystem_avail_bytes",
    })
    memory = ("node_memory_MemTotal_bytes", frozenset[tuple[str, str]]())
    assert ours[memory].value == theirs[memory].value
    assert ({n for n, _ in ours if n.startswith("node_memory_")}
            == {n for n, _ in theirs if n.startswith("node_memory_")})
    cpu = [key for key in theirs if key[0] == "node_cpu_seconds_total"]
    assert cpu and set(cpu) <= set(ours)
    for key in cpu:  # a CPU spends at most `elapsed` seconds more in any mode
        assert 0 <= ours[key].value - theirs[key].value <= elapsed + 0.011, key
    root = next(key for key in theirs if key[0] == "node_filesystem_size_bytes"
                and dict(key[1])["mountpoint"] == "/")
    assert ours[root].value == theirs[root].value


def test_fixture_tree_reads_as_node_exporter_reads_it() -> None:
    with _node_exporter(f"--path.procfs={FIXTURE / 'proc'}", f"--path.sysfs={FIXTURE / 'sys'}",
                        f"--path.rootfs={FIXTURE}", "--collector.cpu", "--collector.meminfo",
                        "--collector.loadavg", "--collector.stat", "--collector.diskstats",
                        "--collector.infiniband", "--collector.edac",
                        "--collector.thermal_zone", "--collector.hwmon",
                        "--collector.netclass", "--collector.filesystem",
                        # The host collector leaves pods' virtual interfaces out by default.
                        f"--collector.netclass.ignored-devices={DEFAULT_NET_EXCLUDE}") as url:
        theirs = _scrape(url)
    ours = _collect(str(FIXTURE))

    _assert_same_shape(ours, theirs, {
        "node_cpu_seconds_total", "node_memory_MemTotal_bytes", "node_load5",
        "node_disk_read_bytes_total", "node_disk_io_now", "node_infiniband_state_id",
        "node_infiniband_rate_bytes_per_second", "node_infiniband_port_data_received_bytes_total",
        "node_infiniband_link_downed_total", "node_infiniband_symbol_error_total",
        "node_edac_correctable_errors_total", "node_edac_csrow_uncorrectable_errors_total",
        "node_thermal_zone_temp", "node_hwmon_temp_celsius", "node_network_speed_bytes",
        "node_network_carrier_changes_total", "node_filesystem_device_error",
    })
    # Same series for every name both report, and the same value (free space is live).
    shared = {name for name, _ in ours} & {name for name, _ in theirs}
    their_series = {key for key in theirs if key[0] in shared}
    assert their_series - set(ours) == set()
    for key in their_series:
        if key[0] not in ("node_filesystem_free_bytes", "node_filesystem_avail_bytes",
                          "node_filesystem_files_free"):
            assert ours[key].value == pytest.approx(theirs[key].value, rel=1e-12), key
