"""Tails log files the way log shippers do and publishes their records as OTLP log batches.

Each file is followed across rotation by rename and by truncation (`log_cursor`), its lines
are joined into multi-line records where a rule says so (`log_multiline`), and, given a
checkpoint file, the position after the last published record is saved (`log_checkpoint`),
so a restarted collector goes on where the last one stopped. Lines that are too long or not
text are counted, reported with their file and byte offset, and skipped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.log_checkpoint import CheckpointFile
from vigil.collectors.log_cursor import FileCursor, ReadResult
from vigil.collectors.log_lines import Rejected
from vigil.collectors.log_multiline import Joiner, Record, rules_named
from vigil.collectors.log_publish import publish_log_lines
from vigil.collectors.log_rotation import FilePosition

from vigil.otlp import LogLine

log = logging.getLogger(__name__)

# `journalctl -o short-iso(-precise)` and RFC 3339 syslog lines start with the time.
_LEADING_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)\s")
# Unix time of each (whole second, offset) seen lately: the lines of one burst share their
# second, and parsing a date is most of what reading a line's time costs.
_SECONDS: dict[tuple[str, str], float | None] = {}
_SECONDS_KEPT = 4096
# Skipped lines reported one by one per read; beyond that, one summary (a binary file would
# otherwise write a warning for every newline byte in it).
_REPORTED_PER_READ = 5


@dataclass(frozen=True, slots=True)
class TailedFile:
    path: Path
    node: str
    source: str  # "kernel", "training", ...: becomes the log.source attribute
    multiline: tuple[str, ...] = ()  # rule names (log_multiline.RULES); first match wins


def line_time(line: str, fallback: float) -> float:
    """The time a line was written, from its leading timestamp if it has one."""
    match = _LEADING_TIME.match(line)
    if match is None:
        return fallback
    second, fraction, offset = match.groups()
    try:
        epoch = _SECONDS[(second, offset)]
    except KeyError:
        epoch = _epoch_second(second, offset)
    if epoch is None:
        return fallback
    return epoch + float(fraction) if fraction else epoch


def _epoch_second(second: str, offset: str) -> float | None:
    try:
        epoch: float | None = datetime.fromisoformat(
            second + ("+00:00" if offset == "Z" else offset)).timestamp()
    except ValueError:
        epoch = None  # looks like a time, is not one (month 13)
    if len(_SECONDS) >= _SECONDS_KEPT:
        _SECONDS.clear()
    _SECONDS[(second, offset)] = epoch
    return epoch


class _Followed:
    """One file's cursor and joiner, and the attributes its records carry."""

    def __init__(self, tailed: TailedFile, cursor: FileCursor, joiner: Joiner | None) -> None:
        self.tailed = tailed
        self.cursor = cursor
        self.joiner = joiner
        self.attributes = {"log.file.path": str(tailed.path), "log.source": tailed.source}

    def records(self, result: ReadResult, now: float) -> list[LogLine]:
        attributes = self.attributes
        if self.joiner is None:
            return [LogLine(body=text, timestamp=line_time(text, now), attributes=attributes)
                    for _, text in result.lines if text]
        joined = self.joiner.feed(result.lines, now)
        if result.file_ended:  # a record never spans two files
            joined += self.joiner.flush()
        return self.lines_of(joined)

    def lines_of(self, joined: list[Record]) -> list[LogLine]:
        return [LogLine(body=r.text, timestamp=line_time(r.text, r.seen_at),
                        attributes=self.attributes) for r in joined]

    def position(self) -> FilePosition | None:
        pending = self.joiner.pending_start if self.joiner is not None else None
        return self.cursor.position(pending)


class LogFileCollector(PollingCollector):
    """Publishes the new records of each file, many per message, keyed by node.

    With `checkpoint`, a file already known there is resumed from its saved position, and
    one that is not starts per `from_start`. `rotate_wait_s` is how long a renamed file is
    still read when no new file has shown up at its path.
    """

    def __init__(
        self, bus: Publisher, files: list[TailedFile], interval_s: float,
        max_lines_per_message: int, from_start: bool = False, name: str = "log_file",
        checkpoint: Path | None = None, max_line_bytes: int = 1 << 20,
        multiline_flush_s: float = 1.0, rotate_wait_s: float = 5.0,
        checkpoint_interval_s: float = 1.0,
    ) -> None:
        super().__init__(name, interval_s)
        self.bus = bus
        self.max_lines = max_lines_per_message
        self._checkpoint = (CheckpointFile(checkpoint, checkpoint_interval_s)
                            if checkpoint is not None else None)
        if self._checkpoint is not None and self._checkpoint.load_error is not None:
            self.counters.add_errored()
        self._failing: set[str] = set()
        self._followed: list[_Followed] = []
        for tailed in files:
            try:
                rules = rules_named(tailed.multiline)
            except ValueError as exc:
                raise ValueError(f"{tailed.path}: {exc}") from None
            joiner = Joiner(rules, multiline_flush_s, max_line_bytes) if rules else None
            cursor = FileCursor(tailed.path, max_line_bytes, from_start, rotate_wait_s,
                                resume=self._saved_position(tailed.path))
            self._followed.append(_Followed(tailed, cursor, joiner))

    def collect(self, now: float) -> None:
        for followed in self._followed:
            self._collect_file(followed, now)
        if self._checkpoint is not None:
            self._checkpoint.save_if_due()

    def shutdown(self) -> None:
        super().shutdown()
        for followed in self._followed:
            if followed.joiner is not None and self._checkpoint is None:
                # Nothing would bring an open record back after we exit: send it as it is.
                # With a checkpoint it stays unsent; the saved position is its first line.
                self._publish(followed, followed.lines_of(followed.joiner.flush()))
            followed.cursor.close()
        if self._checkpoint is not None:
            self._checkpoint.save_on_exit()

    def _collect_file(self, followed: _Followed, now: float) -> None:
        path = str(followed.tailed.path)
        while True:
            try:
                result = followed.cursor.read(now)
            except OSError as exc:  # one unreadable file must not hold up the others
                if path not in self._failing:  # say it once, not every interval
                    log.warning("log file unreadable", extra={"path": path, "error": exc})
                    self._failing.add(path)
                self.counters.add_errored()
                return
            if path in self._failing:
                self._failing.discard(path)
                log.info("log file readable again", extra={"path": path})
            self._report(followed, result)
            self.counters.add_received(sum(1 for _, text in result.lines if text)
                                       + len(result.rejected))
            self._publish(followed, followed.records(result, now))
            if not result.more or self.stopping.is_set():
                break
        if followed.joiner is not None:
            self._publish(followed, followed.lines_of(followed.joiner.flush_idle(now)))

    def _publish(self, followed: _Followed, records: list[LogLine]) -> None:
        if records:
            publish_log_lines(self.bus, followed.tailed.node, records, self.max_lines)
            self.counters.add_sent(len(records))
        if self._checkpoint is not None:  # only now: everything before it was handed over
            position = followed.position()
            if position is not None:
                self._checkpoint.put(str(followed.tailed.path), position.to_entry())

    def _report(self, followed: _Followed, result: ReadResult) -> None:
        rejected = result.rejected
        if not rejected:
            return
        self.counters.add_errored(len(rejected))
        where = {"path": str(followed.tailed.path), "file": str(result.path)}
        for skipped in rejected[:_REPORTED_PER_READ]:
            log.warning("log line skipped", extra={
                **where, "offset": skipped.offset, "bytes": skipped.length,
                "reason": skipped.reason})
        if len(rejected) > _REPORTED_PER_READ:
            rest: list[Rejected] = rejected[_REPORTED_PER_READ:]
            log.warning("more log lines skipped", extra={
                **where, "count": len(rest), "first_offset": rest[0].offset,
                "last_offset": rest[-1].offset})

    def _saved_position(self, path: Path) -> FilePosition | None:
        entry = self._checkpoint.get(str(path)) if self._checkpoint is not None else None
        if entry is None:
            return None
        try:
            return FilePosition.from_entry(entry)
        except ValueError as exc:
            log.warning("unusable checkpoint entry ignored",
                        extra={"path": str(path), "error": str(exc)})
            self.counters.add_errored()
            return None
