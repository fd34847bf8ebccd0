"""The host collector: CPU, memory, disks, filesystems, NICs, InfiniBand, EDAC and temperatures.

It reads /proc and /sys itself (see `host_proc`) and names every metric the way Prometheus
node-exporter does, so a detector written for node-exporter works on either source.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass

from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.host_proc import (
    Readings,
    read_diskstats,
    read_edac,
    read_infiniband,
    read_loadavg,
    read_meminfo,
    read_net,
    read_stat,
    read_text,
    read_thermal,
)
from vigil.collectors.identity import tag_samples
from vigil.topology.identity import EntityResolver

from vigil.bus import Topic
from vigil.otlp import MetricBatch, encode_metrics

log = logging.getLogger(__name__)

# Per-pod virtual interfaces: many, short-lived, and each costs ~30 file reads per interval.
DEFAULT_NET_EXCLUDE = r"^(veth|cali|lxc)"
# node-exporter's default exclusions: kernel and container plumbing, not storage.
_PSEUDO_FS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "erofs", "fusectl", "hugetlbfs", "iso9660", "mqueue", "nsfs", "overlay", "proc",
    "procfs", "pstore", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tracefs",
})
_SKIPPED_MOUNTPOINT = re.compile(
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
# statvfs on these can block for minutes when the server is gone; they get a time limit.
_NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "lustre", "ceph", "glusterfs", "gpfs", "beegfs", "9p", "afs",
})


@dataclass(frozen=True, slots=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str
    readonly: bool


class HostCollector(PollingCollector):
    """Every interval, read the host's kernel counters and publish them as one OTLP batch."""

    def __init__(
        self, bus: Publisher, node: str, interval_s: float, root: str = "/",
        mount_timeout_s: float = 5.0, net_exclude: str = DEFAULT_NET_EXCLUDE,
        name: str = "host",
    ) -> None:
        super().__init__(name, interval_s)
        self._resolver = EntityResolver()  # no graph on a node: ids built as the inventory does
        if not os.path.isfile(os.path.join(root, "proc/stat")):
            raise ValueError(f"host collector root {root!r} has no proc/stat: not a Linux root")
        self.bus = bus
        self.node = node
        self.root = root
        self.mount_timeout_s = mount_timeout_s
        self.net_exclude = re.compile(net_exclude)
        self._reported: set[str] = set()  # files whose garbage was logged already
        self._lock = threading.Lock()
        self._probing: set[str] = set()  # network mounts whose statvfs has not returned yet
        self._hung: set[str] = set()  # ... and of those, the ones said to be hung

    def collect(self, now: float) -> None:
        out = self.read(now)
        for path, detail in out.garbage:
            self.counters.add_errored()
            if path not in self._reported:  # once per file, not once per interval
                self._reported.add(path)
                log.warning("unparseable host file skipped", extra={"path": path,
                                                                    "detail": detail})
        batch = MetricBatch(resource={"host.name": self.node, "vigil.entity": f"node:{self.node}"},
                            samples=tag_samples(out.samples, self.node, self._resolver))
        self.bus.publish(Topic.METRICS, encode_metrics([batch]), key=self.node)
        self.counters.add_received(len(out.samples))
        self.counters.add_sent(len(out.samples))

    def read(self, now: float) -> Readings:
        """Everything the host reports right now, without publishing it."""
        out = Readings(now)
        read_stat(self.root, out)
        read_loadavg(self.root, out)
        read_meminfo(self.root, out)
        read_diskstats(self.root, out)
        read_net(self.root, out, self.net_exclude)
        read_infiniband(self.root, out)
        read_edac(self.root, out)
        read_thermal(self.root, out)
        self._read_filesystems(out)
        return out

    def _read_filesystems(self, out: Readings) -> None:
        """Size and free space of every real filesystem, as node-exporter's filesystem collector.

        A filesystem that cannot be asked, or whose network server does not answer within
        `mount_timeout_s`, reports node_filesystem_device_error 1 instead of sizes.
        """
        seen: dict[str, Mount] = {}
        for mount in read_mounts(self.root, out):
            if mount.fstype not in _PSEUDO_FS and not _SKIPPED_MOUNTPOINT.match(mount.mountpoint):
                seen[mount.mountpoint] = mount  # stacked mounts: the last one is visible
        for mount in seen.values():
            labels = {"device": mount.device, "fstype": mount.fstype,
                      "mountpoint": mount.mountpoint}
            try:
                stat = self._statvfs(os.path.join(self.root, mount.mountpoint.lstrip("/")),
                                     mount.fstype)
            except OSError:
                out.gauge("node_filesystem_device_error", 1.0, labels)
                continue
            out.gauge("node_filesystem_device_error", 0.0, labels)
            out.gauge("node_filesystem_readonly", float(mount.readonly), labels)
            out.gauge("node_filesystem_size_bytes", float(stat.f_blocks * stat.f_frsize), labels)
            out.gauge("node_filesystem_free_bytes", float(stat.f_bfree * stat.f_frsize), labels)
            out.gauge("node_filesystem_avail_bytes", float(stat.f_bavail * stat.f_frsize), labels)
            out.gauge("node_filesystem_files", float(stat.f_files), labels)
            out.gauge("node_filesystem_files_free", float(stat.f_ffree), labels)

    def _statvfs(self, path: str, fstype: str) -> os.statvfs_result:
        """os.statvfs, with a time limit for network filesystems.

        A hung NFS or Lustre server leaves statvfs blocked in the kernel, uninterruptibly;
        asking from a helper thread keeps collection going. While that thread is still
        blocked the mount is not asked again, so one hung server costs one thread.
        """
        if fstype not in _NETWORK_FS and not fstype.startswith("fuse."):
            return os.statvfs(path)
        with self._lock:
            if path in self._probing:
                raise TimeoutError(f"statvfs({path}) still blocked")
            self._probing.add(path)
        answer: list[os.statvfs_result | OSError] = []
        probe = threading.Thread(target=self._probe, args=(path, answer), daemon=True,
                                 name=f"{self.name}-statvfs")
        probe.start()
        probe.join(self.mount_timeout_s)
        if not answer:
            with self._lock:
                hung_now = path not in self._hung
                self._hung.add(path)
            if hung_now:
                log.warning("filesystem not responding", extra={
                    "mountpoint": path, "fstype": fstype, "timeout_s": self.mount_timeout_s})
            raise TimeoutError(f"statvfs({path}) took longer than {self.mount_timeout_s} s")
        if isinstance(answer[0], OSError):
            raise answer[0]
        return answer[0]

    def _probe(self, path: str, answer: list[os.statvfs_result | OSError]) -> None:
        try:
            answer.append(os.statvfs(path))
        except OSError as exc:
            answer.append(exc)
        with self._lock:
            self._probing.discard(path)
            recovered = path in self._hung
            self._hung.discard(path)
        if recovered:
            log.info("filesystem responding again", extra={"mountpoint": path})


def read_mounts(root: str, out: Readings) -> list[Mount]:
    """/proc/mounts, with the kernel's octal escapes (`\\040` for a space) decoded."""
    path = os.path.join(root, "proc/mounts")
    text = read_text(path)
    mounts: list[Mount] = []
    for lineno, line in enumerate((text or "").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            out.bad(path, f"line {lineno}: {len(fields)} fields, expected 6")
            continue
        device, mountpoint, fstype, options = (_unescape(f) for f in fields[:4])
        mounts.append(Mount(device, mountpoint, fstype, "ro" in options.split(",")))
    return mounts


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
