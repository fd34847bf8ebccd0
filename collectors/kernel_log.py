"""Reads the kernel log, where NVRM Xid, mlx5 and EDAC errors appear, from /dev/kmsg.

Each read() of /dev/kmsg returns one record: `pri,seq,usec,flags[,...];message`, then
` KEY=value` lines (the device the message is about: `SUBSYSTEM=pci`, `DEVICE=+pci:...`).
The kernel escapes every byte outside printable ASCII as `\\xNN`. `usec` counts from boot,
and `seq` numbers every record of this boot, so a restart that saved the boot id and the last
seq skips what it already sent and notices what the kernel overwrote meanwhile. Where
/dev/kmsg cannot be read (containers without CAP_SYSLOG), `kernel_log_collector` follows
`journalctl --dmesg` instead.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.journald import JournalCollector
from vigil.collectors.log_checkpoint import CheckpointFile
from vigil.collectors.log_publish import publish_log_lines, syslog_severity

from vigil.otlp import LogLine

log = logging.getLogger(__name__)

KMSG = Path("/dev/kmsg")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_READ_BYTES = 1 << 16  # larger than any record; a smaller buffer makes read() fail (EINVAL)
_RECORDS_PER_POLL = 100_000
_ESCAPED = re.compile(rb"\\x([0-9a-fA-F]{2})")
# Dictionary keys carried as attributes (what dev_printk() attaches to a message).
_ATTRIBUTE_KEYS = {"SUBSYSTEM": "kernel.subsystem", "DEVICE": "kernel.device"}


@dataclass(frozen=True, slots=True)
class KmsgRecord:
    level: int  # syslog priority 0 (emerg) to 7 (debug)
    facility: int  # 0 for the kernel itself; writers to /dev/kmsg use others
    seq: int
    usec: int  # since boot, on the printk clock
    message: str
    dictionary: Mapping[str, str]


def parse_kmsg_record(record: bytes) -> KmsgRecord:
    """One /dev/kmsg record; ValueError says what is wrong with it."""
    head, separator, body = record.partition(b";")
    if not separator:
        raise ValueError("no ';' after the record's prefix")
    prefix = head.split(b",")
    try:
        priority, seq, usec = int(prefix[0]), int(prefix[1]), int(prefix[2])
    except (IndexError, ValueError):
        raise ValueError(f"prefix {head[:40]!r} is not pri,seq,usec,flags") from None
    if min(priority, seq, usec) < 0:
        raise ValueError(f"negative number in prefix {head[:40]!r}")
    message, *continuation = body.rstrip(b"\n").split(b"\n")
    dictionary = {}
    for line in continuation:
        key, equals, value = line[1:].partition(b"=")
        if line.startswith(b" ") and equals:
            dictionary[_unescape(key)] = _unescape(value)
    return KmsgRecord(level=priority & 7, facility=priority >> 3, seq=seq, usec=usec,
                      message=_unescape(message), dictionary=dictionary)


def split_kmsg_records(data: bytes) -> list[bytes]:
    """The records in `data`: a line that starts with a space belongs to the record above.

    /dev/kmsg gives one record per read; a file or pipe of them gives many at once.
    """
    records: list[bytes] = []
    for line in data.split(b"\n"):
        if line.startswith(b" ") and records:
            records[-1] += b"\n" + line
        elif line:
            records.append(line)
    return records


def _unescape(text: bytes) -> str:
    if b"\\x" in text:
        text = _ESCAPED.sub(lambda m: bytes((int(m.group(1), 16),)), text)
    return text.decode("utf-8", errors="replace")


def boot_time() -> float:
    """Unix time of boot on the printk clock.

    /proc/stat's btime says the same in whole seconds; this keeps the sub-second part. The
    printk clock stops during suspend like CLOCK_MONOTONIC, so that is the clock subtracted.
    """
    return time.time() - time.monotonic()


def current_boot_id(path: Path = BOOT_ID) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class KmsgCollector(PollingCollector):
    """Publishes new kernel log records each interval, as log lines keyed by `node`.

    `device` is /dev/kmsg, or in tests a file of records. With a checkpoint the whole buffer
    is read, skipping what was sent if the checkpoint is from this boot; without one,
    `from_start` says whether the records already in the buffer are published.
    """

    def __init__(
        self, bus: Publisher, node: str, interval_s: float, max_lines_per_message: int,
        device: Path = KMSG, checkpoint: Path | None = None, from_start: bool = False,
        boot_id: str | None = None, boot_epoch: float | None = None,
        checkpoint_interval_s: float = 1.0, name: str = "kernel_log",
    ) -> None:
        super().__init__(name, interval_s)
        self.bus = bus
        self.node = node
        self.max_lines = max_lines_per_message
        self.device = device
        self.from_start = from_start
        self.boot_id = current_boot_id() if boot_id is None else boot_id
        self.boot_epoch = boot_time() if boot_epoch is None else boot_epoch
        self._checkpoint = (CheckpointFile(checkpoint, checkpoint_interval_s)
                            if checkpoint is not None else None)
        self._key = f"kmsg:{device}"
        self._fd: int | None = None
        self._partial = b""
        self.last_seq: int | None = None
        self._open_failed = False

    def collect(self, now: float) -> None:
        if self._fd is None and not self._open():
            return
        records: list[LogLine] = []
        for raw in self._read_available():
            try:
                record = parse_kmsg_record(raw)
            except ValueError as exc:
                log.warning("kernel log record skipped", extra={
                    "device": str(self.device), "after_seq": self.last_seq, "reason": str(exc),
                    "record": raw[:80]})
                self.counters.add_received()
                self.counters.add_errored()
                continue
            if self.last_seq is not None and record.seq <= self.last_seq:
                continue  # sent before the restart
            self.counters.add_received()
            self._note_gap(record.seq)
            self.last_seq = record.seq
            records.append(self._line(record))
        if records:
            publish_log_lines(self.bus, self.node, records, self.max_lines)
            self.counters.add_sent(len(records))
        if self._checkpoint is not None and self.last_seq is not None:
            self._checkpoint.put(self._key, {"boot_id": self.boot_id, "seq": self.last_seq})
            self._checkpoint.save_if_due()

    def shutdown(self) -> None:
        super().shutdown()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._checkpoint is not None:
            self._checkpoint.save_on_exit()

    def _open(self) -> bool:
        try:
            fd = os.open(self.device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            if not self._open_failed:  # say it once, not every interval
                log.error("kernel log cannot be opened",
                          extra={"device": str(self.device), "error": exc})
                self._open_failed = True
            self.counters.add_errored()
            return False
        self._fd, self._open_failed = fd, False
        saved = self._checkpoint.get(self._key) if self._checkpoint is not None else None
        if saved is not None:
            seq = saved.get("seq")
            if saved.get("boot_id") == self.boot_id and isinstance(seq, int):
                self.last_seq = seq  # read from the oldest record, skipping what was sent
            # A checkpoint from an earlier boot: every record of this one is unsent.
        elif not self.from_start:
            os.lseek(fd, 0, os.SEEK_END)  # only records logged from now on
        return True

    def _read_available(self) -> list[bytes]:
        assert self._fd is not None
        records: list[bytes] = []
        while len(records) < _RECORDS_PER_POLL:
            try:
                chunk = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                break  # nothing more for now
            except BrokenPipeError:
                # The kernel overwrote records we had not read; the seq gap says how many.
                continue
            if not chunk:
                break  # end of a plain file
            data = self._partial + chunk
            complete = data.rfind(b"\n") + 1
            self._partial = data[complete:]
            records += split_kmsg_records(data[:complete])
        return records

    def _note_gap(self, seq: int) -> None:
        if self.last_seq is not None and seq > self.last_seq + 1:
            lost = seq - self.last_seq - 1
            log.warning("kernel log records lost: overwritten before they were read",
                        extra={"device": str(self.device), "after_seq": self.last_seq,
                               "lost": lost})
            self.counters.add_errored(lost)

    def _line(self, record: KmsgRecord) -> LogLine:
        attributes = {"log.source": "kernel"}
        for key, name in _ATTRIBUTE_KEYS.items():
            if key in record.dictionary:
                attributes[name] = record.dictionary[key]
        return LogLine(body=record.message, timestamp=self.boot_epoch + record.usec / 1e6,
                       attributes=attributes, severity_text=syslog_severity(record.level))


def kernel_log_collector(
    bus: Publisher, node: str, interval_s: float, max_lines_per_message: int,
    checkpoint: Path | None = None, from_start: bool = False, device: Path = KMSG,
    journal_program: Sequence[str] = ("journalctl",),
) -> KmsgCollector | JournalCollector:
    """/dev/kmsg where it can be read, else `journalctl --dmesg`; both publish log.source=kernel."""
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as exc:
        log.info("kernel log read through journalctl",
                 extra={"device": str(device), "reason": str(exc)})
        return JournalCollector(bus, node, ["--dmesg"], "kernel", max_lines_per_message,
                                checkpoint, from_start, journal_program, name="kernel_log")
    return KmsgCollector(bus, node, interval_s, max_lines_per_message, device, checkpoint,
                         from_start)
