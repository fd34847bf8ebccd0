"""Tails log files (kernel, training) like `tail -F` and publishes new lines as OTLP log batches."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from vigil.collectors.base import PollingCollector

from vigil.bus import Bus, Topic
from vigil.otlp import LogBatch, LogLine, encode_logs

log = logging.getLogger(__name__)

# `journalctl -o short-iso(-precise)` and RFC 3339 syslog lines start with the time.
_LEADING_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))\s")


@dataclass(frozen=True, slots=True)
class TailedFile:
    path: Path
    node: str
    source: str  # "kernel", "training", ...: becomes the log.source attribute


def line_time(line: str, fallback: float) -> float:
    """The time a line was written, from its leading timestamp if it has one."""
    match = _LEADING_TIME.match(line)
    if match:
        try:
            return datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return fallback


class _Cursor:
    """One followed file, held open like `tail -F`.

    Holding the file open means a rotation (rename, then a new file at the path) loses
    nothing: the rest of the old file is read through the open handle before switching.
    A file that shrank was truncated and is read again from its start.
    """

    def __init__(self, tailed: TailedFile, from_start: bool) -> None:
        self.tailed = tailed
        self.from_start = from_start
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._partial = b""

    def read_new(self, max_bytes: int = 8 * 1024 * 1024) -> list[str]:
        data = b""
        try:
            stat = os.stat(self.tailed.path)
        except FileNotFoundError:
            stat = None
        if self._file is not None and (stat is None or stat.st_ino != self._inode):
            data += self._file.read(max_bytes)  # the rest of the rotated-away file
            self._close()
        if stat is None:
            self.from_start = True  # when it appears, all of it is new
            return self._lines(data)
        if self._file is None:
            self._file = open(self.tailed.path, "rb")  # noqa: SIM115 - held across polls
            self._inode = os.fstat(self._file.fileno()).st_ino
            if not self.from_start:
                self._file.seek(0, os.SEEK_END)  # it was there before us: only new lines
            self.from_start = True  # any later file at this path is new from its first byte
        elif stat.st_size < self._file.tell():
            self._file.seek(0)
            self._partial = b""
        data += self._file.read(max_bytes)
        return self._lines(data)

    def _lines(self, chunk: bytes) -> list[str]:
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        return [c.decode("utf-8", errors="replace") for c in complete if c]

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._inode = None, None

    def close(self) -> None:
        self._close()


class LogFileCollector(PollingCollector):
    """Publishes the new lines of each file, many lines per message, keyed by node."""

    def __init__(
        self, bus: Bus, files: list[TailedFile], interval_s: float, max_lines_per_message: int,
        from_start: bool = False, name: str = "log_file",
    ) -> None:
        super().__init__(name, interval_s)
        self.bus = bus
        self.max_lines = max_lines_per_message
        self._cursors = [_Cursor(f, from_start) for f in files]

    def collect(self, now: float) -> None:
        for cursor in self._cursors:
            lines = cursor.read_new()
            if not lines:
                continue
            tailed = cursor.tailed
            attributes = {"log.file.path": str(tailed.path), "log.source": tailed.source}
            records = [LogLine(body=text, timestamp=line_time(text, now), attributes=attributes)
                       for text in lines]
            for start in range(0, len(records), self.max_lines):
                batch = LogBatch(
                    resource={"host.name": tailed.node, "vigil.entity": f"node:{tailed.node}"},
                    lines=records[start:start + self.max_lines],
                )
                self.bus.publish(Topic.LOGS, encode_logs([batch]), key=tailed.node)
            self.counters.add_received(len(records))
            self.counters.add_sent(len(records))

    def shutdown(self) -> None:
        super().shutdown()
        for cursor in self._cursors:
            cursor.close()
