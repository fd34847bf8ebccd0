"""Tails log files (kernel, training) like `tail -F` and publishes new lines as OTLP log batches."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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
    """Where we are in one file; notices rotation (new inode) and truncation (size shrank)."""

    def __init__(self, tailed: TailedFile, from_start: bool) -> None:
        self.tailed = tailed
        self.inode: int | None = None
        self.offset = 0
        self.partial = b""
        self.from_start = from_start

    def read_new(self, max_bytes: int = 8 * 1024 * 1024) -> list[str]:
        try:
            stat = os.stat(self.tailed.path)
        except FileNotFoundError:
            # Not there before us: when it appears, all of it is new and is read from the start.
            self.from_start = True
            return []
        if self.inode != stat.st_ino or stat.st_size < self.offset:
            first_open = self.inode is None
            self.inode, self.partial = stat.st_ino, b""
            # Start at the end of a file that was there before us; read rotated files whole.
            self.offset = stat.st_size if first_open and not self.from_start else 0
        if stat.st_size == self.offset:
            return []
        with open(self.tailed.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(max_bytes)
        self.offset += len(chunk)
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        return [c.decode("utf-8", errors="replace") for c in complete if c]


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
