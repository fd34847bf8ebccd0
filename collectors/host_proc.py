"""Readers for the kernel's /proc and /sys files, under the names Prometheus node-exporter uses.

Each reader takes the filesystem root (so tests can point it at a fixture tree) and a
`Readings` to fill. A file that is absent, or that the kernel refuses to read (a down link's
`speed`, a root-only counter), is skipped without a word: a host without InfiniBand simply
has no /sys/class/infiniband. A file whose content does not parse is noted in
`Readings.garbage` with its path and line, and the rest of it is still read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from vigil.otlp import MetricSample

# /proc/stat counts CPU time in USER_HZ ticks, which the kernel ABI fixes at 100 whatever
# CONFIG_HZ is; node-exporter divides by the same constant.
USER_HZ = 100
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# node-exporter's stat collector: /proc/stat key -> (metric, kind)
_STAT_SCALARS = {
    "intr": ("node_intr_total", "counter"),
    "ctxt": ("node_context_switches_total", "counter"),
    "btime": ("node_boot_time_seconds", "gauge"),
    "processes": ("node_forks_total", "counter"),
    "procs_running": ("node_procs_running", "gauge"),
    "procs_blocked": ("node_procs_blocked", "gauge"),
}
# /proc/diskstats columns after major, minor and name: (metric, scale); io_now is the one gauge.
_DISK_COLUMNS = (
    ("node_disk_reads_completed_total", 1.0), ("node_disk_reads_merged_total", 1.0),
    ("node_disk_read_bytes_total", 512.0), ("node_disk_read_time_seconds_total", 0.001),
    ("node_disk_writes_completed_total", 1.0), ("node_disk_writes_merged_total", 1.0),
    ("node_disk_written_bytes_total", 512.0), ("node_disk_write_time_seconds_total", 0.001),
    ("node_disk_io_now", 1.0), ("node_disk_io_time_seconds_total", 0.001),
    ("node_disk_io_time_weighted_seconds_total", 0.001),
    ("node_disk_discards_completed_total", 1.0), ("node_disk_discards_merged_total", 1.0),
    ("node_disk_discarded_sectors_total", 1.0), ("node_disk_discard_time_seconds_total", 0.001),
    ("node_disk_flush_requests_total", 1.0),
    ("node_disk_flush_requests_time_seconds_total", 0.001),
)
# Partitions, RAM disks and loop devices: node-exporter's default exclusion.
_DISK_EXCLUDE = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$")
# /sys/class/net/<dev>/statistics/<file> -> node-exporter's netdev metric
_NET_STATS = {
    "rx_bytes": "node_network_receive_bytes_total",
    "rx_packets": "node_network_receive_packets_total",
    "rx_errors": "node_network_receive_errs_total",
    "rx_dropped": "node_network_receive_drop_total",
    "rx_fifo_errors": "node_network_receive_fifo_total",
    "rx_frame_errors": "node_network_receive_frame_total",
    "rx_compressed": "node_network_receive_compressed_total",
    "multicast": "node_network_receive_multicast_total",
    "rx_nohandler": "node_network_receive_nohandler_total",
    "rx_crc_errors": "node_network_receive_crc_errors_total",
    "rx_length_errors": "node_network_receive_length_errors_total",
    "rx_missed_errors": "node_network_receive_missed_errors_total",
    "rx_over_errors": "node_network_receive_over_errors_total",
    "tx_bytes": "node_network_transmit_bytes_total",
    "tx_packets": "node_network_transmit_packets_total",
    "tx_errors": "node_network_transmit_errs_total",
    "tx_dropped": "node_network_transmit_drop_total",
    "tx_fifo_errors": "node_network_transmit_fifo_total",
    "collisions": "node_network_transmit_colls_total",
    "tx_carrier_errors": "node_network_transmit_carrier_total",
    "tx_compressed": "node_network_transmit_compressed_total",
    "tx_aborted_errors": "node_network_transmit_aborted_errors_total",
    "tx_heartbeat_errors": "node_network_transmit_heartbeat_errors_total",
    "tx_window_errors": "node_network_transmit_window_errors_total",
}
# /sys/class/infiniband/<dev>/ports/<port>/counters/<file> -> node-exporter's infiniband metric
_IB_COUNTERS = {
    "excessive_buffer_overrun_errors": "excessive_buffer_overrun_errors_total",
    "link_downed": "link_downed_total",
    "link_error_recovery": "link_error_recovery_total",
    "local_link_integrity_errors": "local_link_integrity_errors_total",
    "multicast_rcv_packets": "multicast_packets_received_total",
    "multicast_xmit_packets": "multicast_packets_transmitted_total",
    "port_rcv_constraint_errors": "port_constraint_errors_received_total",
    "port_xmit_constraint_errors": "port_constraint_errors_transmitted_total",
    "port_rcv_data": "port_data_received_bytes_total",
    "port_xmit_data": "port_data_transmitted_bytes_total",
    "port_rcv_discards": "port_discards_received_total",
    "port_xmit_discards": "port_discards_transmitted_total",
    "port_rcv_errors": "port_errors_received_total",
    "port_rcv_packets": "port_packets_received_total",
    "port_xmit_packets": "port_packets_transmitted_total",
    "port_xmit_wait": "port_transmit_wait_total",
    "port_rcv_remote_physical_errors": "port_receive_remote_physical_errors_total",
    "port_rcv_switch_relay_errors": "port_receive_switch_relay_errors_total",
    "symbol_error": "symbol_error_total",
    "unicast_rcv_packets": "unicast_packets_received_total",
    "unicast_xmit_packets": "unicast_packets_transmitted_total",
    "VL15_dropped": "vl15_dropped_total",
}
# The data counters count 4-octet words (IBA PortRcvData/PortXmitData); node-exporter reports bytes.
_IB_WORDS = {"port_rcv_data", "port_xmit_data"}
_NUMBERED = re.compile(r"^([a-z_]+?)(\d+)$")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(slots=True)
class Readings:
    """What one collection found: samples stamped `now`, and the files that held garbage."""

    now: float
    samples: list[MetricSample] = field(default_factory=list)
    garbage: list[tuple[str, str]] = field(default_factory=list)  # (path, what was wrong)

    def gauge(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.samples.append(MetricSample(name, value, labels, self.now))

    def counter(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.samples.append(MetricSample(name, value, labels, self.now, "counter"))

    def bad(self, path: str, detail: str) -> None:
        self.garbage.append((path, detail))


def read_text(path: str) -> str | None:
    """The file's content, or None when it is absent or the kernel will not give it."""
    # os.open/os.read: half the cost of open() for the hundreds of tiny sysfs files per interval.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def read_stat(root: str, out: Readings) -> None:
    """/proc/stat: per-CPU seconds by mode, guest time, and the kernel's activity counters."""
    path = os.path.join(root, "proc/stat")
    for lineno, fields in _lines(path):
        key = fields[0]
        try:
            if key.startswith("cpu") and key != "cpu":
                _cpu_line(out, key[3:], [int(v) for v in fields[1:11]])
            elif key in _STAT_SCALARS:
                name, kind = _STAT_SCALARS[key]
                (out.counter if kind == "counter" else out.gauge)(name, float(fields[1]), {})
        except (ValueError, IndexError) as exc:
            out.bad(path, f"line {lineno}: {exc}")


def _cpu_line(out: Readings, cpu: str, ticks: list[int]) -> None:
    if not cpu.isdigit() or len(ticks) < len(CPU_MODES):
        raise ValueError(f"expected cpuN and {len(CPU_MODES)} tick counts")
    for mode, value in zip(CPU_MODES, ticks, strict=False):
        out.counter("node_cpu_seconds_total", value / USER_HZ, {"cpu": cpu, "mode": mode})
    for mode, value in zip(("user", "nice"), ticks[len(CPU_MODES):], strict=False):
        out.counter("node_cpu_guest_seconds_total", value / USER_HZ, {"cpu": cpu, "mode": mode})


def read_loadavg(root: str, out: Readings) -> None:
    path = os.path.join(root, "proc/loadavg")
    for lineno, fields in _lines(path):
        try:
            values = [float(v) for v in fields[:3]]
            if len(values) < 3:
                raise ValueError("expected three load averages")
        except ValueError as exc:
            out.bad(path, f"line {lineno}: {exc}")
            continue
        for name, value in zip(("node_load1", "node_load5", "node_load15"), values, strict=True):
            out.gauge(name, value, {})


def read_meminfo(root: str, out: Readings) -> None:
    """/proc/meminfo: `Active(anon):  123 kB` becomes node_memory_Active_anon_bytes."""
    path = os.path.join(root, "proc/meminfo")
    for lineno, fields in _lines(path):
        key = _UNSAFE.sub("_", fields[0].rstrip(":").replace("(", "_").replace(")", ""))
        try:
            value = float(fields[1])
        except (ValueError, IndexError) as exc:
            out.bad(path, f"line {lineno}: {exc}")
            continue
        if len(fields) > 2 and fields[2] == "kB":
            out.gauge(f"node_memory_{key}_bytes", value * 1024, {})
        else:
            out.gauge(f"node_memory_{key}", value, {})


def read_diskstats(root: str, out: Readings) -> None:
    path = os.path.join(root, "proc/diskstats")
    for lineno, fields in _lines(path):
        device = fields[2] if len(fields) > 2 else ""
        if _DISK_EXCLUDE.match(device):
            continue
        try:
            values = [int(v) for v in fields[3:3 + len(_DISK_COLUMNS)]]
            if len(values) < 11:
                raise ValueError(f"{len(values)} counters, expected at least 11")
        except ValueError as exc:
            out.bad(path, f"line {lineno}: {exc}")
            continue
        labels = {"device": device}
        for (name, scale), value in zip(_DISK_COLUMNS, values, strict=False):
            if name == "node_disk_io_now":
                out.gauge(name, float(value), labels)
            else:
                out.counter(name, value * scale, labels)


def read_net(root: str, out: Readings, exclude: re.Pattern[str]) -> None:
    """Interface counters from /sys/class/net/*/statistics and link state, as node-exporter."""
    base = os.path.join(root, "sys/class/net")
    for device in _listdir(base):
        if exclude.search(device):
            continue
        labels = {"device": device}
        stats = os.path.join(base, device, "statistics")
        for file in _listdir(stats):
            name = _NET_STATS.get(file)
            if name is not None:
                _counter(out, os.path.join(stats, file), name, labels)
        operstate = read_text(os.path.join(base, device, "operstate"))
        if operstate is not None:
            out.gauge("node_network_up", float(operstate.strip() == "up"), labels)
        for file, name, scale in (("carrier", "node_network_carrier", 1),
                                  ("mtu", "node_network_mtu_bytes", 1),
                                  ("speed", "node_network_speed_bytes", 125_000)):
            value = _number(out, os.path.join(base, device, file))
            if value is not None and value >= 0:  # speed is -1 while the link is down
                out.gauge(name, value * scale, labels)
        _counter(out, os.path.join(base, device, "carrier_changes"),
                 "node_network_carrier_changes_total", labels)


def read_infiniband(root: str, out: Readings) -> None:
    """Port state, rate and counters of every RDMA device, InfiniBand or RoCE.

    `counters/` holds the IBA port counters, named as node-exporter's infiniband collector
    names them. `hw_counters/` holds the driver's own (mlx5: out_of_sequence,
    local_ack_timeout_err, ...), which node-exporter does not read; each becomes
    node_infiniband_hw_<file>_total.
    """
    base = os.path.join(root, "sys/class/infiniband")
    for device in _listdir(base):
        ports = os.path.join(base, device, "ports")
        for port in _listdir(ports):
            labels = {"device": device, "port": port}
            port_dir = os.path.join(ports, port)
            for file, name in (("state", "node_infiniband_state_id"),
                               ("phys_state", "node_infiniband_physical_state_id")):
                _state(out, os.path.join(port_dir, file), name, labels)
            _rate(out, os.path.join(port_dir, "rate"), labels)
            counters = os.path.join(port_dir, "counters")
            for file in _listdir(counters):
                known = _IB_COUNTERS.get(file)
                if known is not None:
                    _counter(out, os.path.join(counters, file), f"node_infiniband_{known}",
                             labels, 4 if file in _IB_WORDS else 1)
            hw_counters = os.path.join(port_dir, "hw_counters")
            for file in _listdir(hw_counters):
                if file != "lifespan":  # the counters' refresh period in ms, not a count
                    _counter(out, os.path.join(hw_counters, file),
                             f"node_infiniband_hw_{_UNSAFE.sub('_', file)}_total", labels)


def read_edac(root: str, out: Readings) -> None:
    """Memory-controller error counts: per controller, and per chip-select row."""
    base = os.path.join(root, "sys/devices/system/edac/mc")
    for mc, controller in _numbered(base, "mc"):
        mc_dir = os.path.join(base, mc)
        labels = {"controller": controller}
        unknown = {"controller": controller, "csrow": "unknown"}
        for file, name, row_labels in (
            ("ce_count", "node_edac_correctable_errors_total", labels),
            ("ue_count", "node_edac_uncorrectable_errors_total", labels),
            ("ce_noinfo_count", "node_edac_csrow_correctable_errors_total", unknown),
            ("ue_noinfo_count", "node_edac_csrow_uncorrectable_errors_total", unknown),
        ):
            _counter(out, os.path.join(mc_dir, file), name, row_labels)
        for row, csrow in _numbered(mc_dir, "csrow"):
            row_labels = {"controller": controller, "csrow": csrow}
            for file, name in (("ce_count", "node_edac_csrow_correctable_errors_total"),
                               ("ue_count", "node_edac_csrow_uncorrectable_errors_total")):
                _counter(out, os.path.join(mc_dir, row, file), name, row_labels)


def read_thermal(root: str, out: Readings) -> None:
    """Thermal zones (/sys/class/thermal) and hwmon temperature sensors, in degrees Celsius."""
    base = os.path.join(root, "sys/class/thermal")
    for entry, zone in _numbered(base, "thermal_zone"):
        kind = read_text(os.path.join(base, entry, "type"))
        millidegrees = _number(out, os.path.join(base, entry, "temp"))
        if kind is not None and millidegrees is not None:
            out.gauge("node_thermal_zone_temp", millidegrees / 1000,
                      {"type": kind.strip(), "zone": zone})
    base = os.path.join(root, "sys/class/hwmon")
    for entry in _listdir(base):
        hwmon = os.path.join(base, entry)
        chip = _hwmon_chip(hwmon)
        # Older drivers keep their sensor files in the device's folder rather than the hwmon's.
        for folder in (hwmon, os.path.join(hwmon, "device")):
            for file in _listdir(folder):
                if file.startswith("temp") and file.endswith("_input"):
                    value = _number(out, os.path.join(folder, file))
                    if value is not None:
                        out.gauge("node_hwmon_temp_celsius", value / 1000,
                                  {"chip": chip, "sensor": file.removesuffix("_input")})


def _hwmon_chip(hwmon: str) -> str:
    """node-exporter's chip label: the device's bus and name, else the `name` file, else hwmonN.

    The bus path is stable across boots, unlike hwmonN, which follows driver load order.
    """
    link = os.path.join(hwmon, "device")
    if os.path.exists(link):
        parent, name = os.path.split(os.path.realpath(link))
        bus, name = _clean(os.path.basename(parent)), _clean(name)
        if name:
            return f"{bus}_{name}" if bus else name
    name = _clean(read_text(os.path.join(hwmon, "name")) or "")
    return name or _clean(os.path.basename(os.path.realpath(hwmon)))


def _clean(text: str) -> str:
    return re.sub(r"[^a-z0-9:_]", "_", text.strip().lower()).strip("_")


def _lines(path: str) -> Iterator[tuple[int, list[str]]]:
    """The numbered, whitespace-split, non-empty lines of a file; nothing if it is absent."""
    text = read_text(path)
    if text is None:
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if fields:
            yield lineno, fields


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _numbered(path: str, prefix: str) -> list[tuple[str, str]]:
    """Entries of `path` named prefix + number, with their number: (`mc0`, `0`)."""
    found = []
    for entry in _listdir(path):
        match = _NUMBERED.match(entry)
        if match and match.group(1) == prefix:
            found.append((entry, match.group(2)))
    return found


def _number(out: Readings, path: str) -> float | None:
    """A file holding one number; None when it is absent or says N/A (a port without a PMA)."""
    text = read_text(path)
    if text is None or text.startswith("N/A"):
        return None
    try:
        return float(int(text.strip()))
    except ValueError:
        out.bad(path, f"not an integer: {text.strip()[:40]!r}")
        return None


def _counter(out: Readings, path: str, name: str, labels: dict[str, str],
             scale: float = 1) -> None:
    value = _number(out, path)
    if value is not None:
        out.counter(name, value * scale, labels)


def _state(out: Readings, path: str, name: str, labels: dict[str, str]) -> None:
    """`4: ACTIVE` -> 4."""
    text = read_text(path)
    if text is None:
        return
    number, _, _ = text.partition(":")
    try:
        out.gauge(name, float(int(number)), labels)
    except ValueError:
        out.bad(path, f"not '<id>: <name>': {text.strip()[:40]!r}")


def _rate(out: Readings, path: str, labels: dict[str, str]) -> None:
    """`400 Gb/sec (4X NDR)` -> 5e10 bytes per second."""
    text = read_text(path)
    if text is None:
        return
    fields = text.split()
    try:
        if len(fields) < 2 or fields[1] != "Gb/sec":
            raise ValueError(text)
        out.gauge("node_infiniband_rate_bytes_per_second", float(fields[0]) * 125_000_000, labels)
    except ValueError:
        out.bad(path, f"not '<n> Gb/sec ...': {text.strip()[:40]!r}")

