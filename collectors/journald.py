"""Follows the systemd journal through `journalctl -o json -f`: service units, or the kernel.

journalctl is the journal's stable reader (its file format is not an interface), so the
collector runs it as a child process with an argument list and reads one JSON object per
line. The cursor of the last published entry is checkpointed and handed back with
`--after-cursor`, so a restart neither resends nor skips entries; if journalctl exits it
is started again the same way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vigil.collectors.base import Publisher
from vigil.collectors.log_checkpoint import CheckpointFile
from vigil.collectors.log_lines import LineSplitter, decode_line
from vigil.collectors.log_publish import publish_log_lines, syslog_severity

from vigil.otlp import LogLine
from vigil.worker import Worker

log = logging.getLogger(__name__)

_CHECKPOINT_KEY = "journal"  # a cursor names a place in the whole journal, whatever the match
# sd_journal_get_cursor(): seqnum id, seqnum, boot id, monotonic and realtime clocks, hash.
_CURSOR = re.compile(r"s=[0-9a-f]{32};i=[0-9a-f]+;b=[0-9a-f]{32};m=[0-9a-f]+;t=[0-9a-f]+;"
                     r"x=[0-9a-f]+")
_STDERR_LINES_LOGGED = 20  # per journalctl run: enough to say why it failed
# Journal fields carried as attributes, by the attribute name; the first field present wins.
# The unit an entry is about: systemd (UNIT=) and root daemons (OBJECT_SYSTEMD_UNIT=) speak
# about units other than their own, and `journalctl --unit` selects those entries too.
_ATTRIBUTE_FIELDS = {
    "systemd.unit": ("UNIT", "OBJECT_SYSTEMD_UNIT", "_SYSTEMD_UNIT"),
    "syslog.identifier": ("SYSLOG_IDENTIFIER",),
    "kernel.subsystem": ("_KERNEL_SUBSYSTEM",),
    "kernel.device": ("_KERNEL_DEVICE",),
}


@dataclass(frozen=True, slots=True)
class JournalEntry:
    message: str
    timestamp: float  # unix seconds, from __REALTIME_TIMESTAMP
    cursor: str
    priority: int | None  # syslog priority 0-7
    attributes: Mapping[str, str]


def parse_journal_entry(line: bytes | str) -> JournalEntry:
    """One line of `journalctl -o json`; ValueError says what is wrong with it."""
    try:
        document = json.loads(line)
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"not a JSON object but {type(document).__name__}")
    cursor = document.get("__CURSOR")
    if not isinstance(cursor, str) or not cursor:
        raise ValueError("no __CURSOR")
    realtime = document.get("__REALTIME_TIMESTAMP")
    if not isinstance(realtime, str) or not realtime.isdigit():
        raise ValueError(f"__REALTIME_TIMESTAMP {realtime!r} is not microseconds")
    attributes = {}
    for name, fields in _ATTRIBUTE_FIELDS.items():
        value = next((document[f] for f in fields if f in document), None)
        if value is not None:
            attributes[name] = field_text(value)
    return JournalEntry(
        message=field_text(document.get("MESSAGE")), timestamp=int(realtime) / 1_000_000,
        cursor=cursor,
        priority=_priority(document.get("PRIORITY")), attributes=attributes,
    )


def field_text(value: object) -> str:
    """A journal field's JSON value as text.

    journalctl writes a field as a string; as an array of byte values when it is not valid
    UTF-8 or holds control characters; as an array of those when the entry has the field more
    than once (the first is taken); as null when it was too large to show.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(b, int) for b in value):
        try:
            raw = bytes(value)
        except ValueError as exc:  # a number outside 0-255
            raise ValueError(f"byte array holds a non-byte: {exc}") from exc
        return decode_line(raw)  # NotText, a ValueError, for binary junk
    if isinstance(value, list) and value:
        return field_text(value[0])
    raise ValueError(f"unexpected field value {value!r:.80}")


def _priority(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit() and int(value) <= 7:
        return int(value)
    return None


def journal_command(
    program: Sequence[str], matches: Sequence[str], cursor: str | None, from_start: bool,
) -> list[str]:
    """journalctl's argument list: follow `matches` as JSON after `cursor` (or from where)."""
    argv = [*program, *matches, "--output=json", "--follow", "--no-pager", "--all"]
    if cursor:
        argv.append(f"--after-cursor={cursor}")
    else:
        argv.append("--lines=all" if from_start else "--lines=0")
    return argv


class JournalCollector(Worker):
    """Runs journalctl for `matches` and publishes each entry as a log line keyed by `node`.

    `matches` selects entries the way journalctl does: `["--dmesg"]` for the kernel,
    `["--unit=a.service", "--unit=b.service"]` for units. `program` is how journalctl is
    run (tests, or `journalctl --directory=...`). Without a saved cursor, `from_start`
    publishes what the journal already holds (for `--dmesg`, the current boot).
    """

    def __init__(
        self, bus: Publisher, node: str, matches: Sequence[str], source: str,
        max_lines_per_message: int, checkpoint: Path | None = None, from_start: bool = False,
        program: Sequence[str] = ("journalctl",), max_line_bytes: int = 1 << 20,
        restart_delay_s: float = 5.0, checkpoint_interval_s: float = 1.0, name: str = "journald",
    ) -> None:
        super().__init__(name)
        self.bus = bus
        self.node = node
        self.matches = list(matches)
        self.source = source
        self.max_lines = max_lines_per_message
        self.from_start = from_start
        self.program = list(program)
        self.max_line_bytes = max_line_bytes
        self.restart_delay_s = restart_delay_s
        self._checkpoint = (CheckpointFile(checkpoint, checkpoint_interval_s)
                            if checkpoint is not None else None)
        self.cursor = self._saved_cursor()

    def _saved_cursor(self) -> str | None:
        saved = self._checkpoint.get(_CHECKPOINT_KEY) if self._checkpoint is not None else None
        if saved is None:
            return None
        cursor = saved.get("cursor")
        if isinstance(cursor, str) and _CURSOR.fullmatch(cursor):
            return cursor
        # journalctl refuses a malformed cursor and would be restarted with it forever.
        log.warning("unusable journal cursor ignored", extra={
            "collector": self.name, "cursor": repr(cursor)[:120]})
        return None

    def command(self) -> list[str]:
        return journal_command(self.program, self.matches, self.cursor, self.from_start)

    def run(self) -> None:
        start_failed = False
        while not self.stopping.is_set():
            argv = self.command()
            try:
                code = self._follow(argv)
            except OSError as exc:  # not installed, not executable
                if not start_failed:  # say it once, not every restart_delay_s
                    log.error("journalctl could not be started",
                              extra={"collector": self.name, "argv": argv, "error": exc})
                start_failed = True
                self.counters.add_errored()
            else:
                start_failed = False
                if not self.stopping.is_set():
                    log.warning("journalctl exited; starting it again",
                                extra={"collector": self.name, "argv": argv, "code": code,
                                       "delay_s": self.restart_delay_s})
            self.stopping.wait(self.restart_delay_s)

    def shutdown(self) -> None:
        super().shutdown()
        if self._checkpoint is not None:
            self._checkpoint.save_on_exit()

    def _follow(self, argv: list[str]) -> int | None:
        """Run journalctl until it exits or we stop; its exit code (None: we stopped it)."""
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        out, err = process.stdout, process.stderr
        splitter = LineSplitter(self.max_line_bytes)
        stderr_lines = 0
        try:
            streams: list[IO[bytes]] = [out, err]
            while out in streams and not self.stopping.is_set():
                ready, _, _ = select.select(streams, [], [], 0.2)
                for stream in ready:
                    chunk = os.read(stream.fileno(), 1 << 16)
                    if not chunk:
                        streams.remove(stream)
                    elif stream is out:
                        self._take(splitter, chunk)
                    else:
                        stderr_lines = self._log_stderr(chunk, stderr_lines)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            out.close()
            err.close()
        if self._checkpoint is not None:
            self._checkpoint.save_if_due()
        return None if self.stopping.is_set() else process.returncode

    def _take(self, splitter: LineSplitter, chunk: bytes) -> None:
        lines, rejected = splitter.feed(chunk)
        for skipped in rejected:
            log.warning("journal entry skipped", extra={
                "collector": self.name, "offset": skipped.offset, "bytes": skipped.length,
                "reason": skipped.reason, "after_cursor": self.cursor})
        self.counters.add_received(len(lines) + len(rejected))
        self.counters.add_errored(len(rejected))
        records: list[LogLine] = []
        cursor = self.cursor
        for offset, raw in lines:
            try:
                entry = parse_journal_entry(raw)
            except ValueError as exc:
                log.warning("journal entry skipped", extra={
                    "collector": self.name, "offset": offset, "bytes": len(raw),
                    "reason": str(exc), "after_cursor": cursor})
                self.counters.add_errored()
                continue
            records.append(LogLine(
                body=entry.message, timestamp=entry.timestamp,
                attributes={"log.source": self.source, **entry.attributes},
                severity_text=syslog_severity(entry.priority),
            ))
            cursor = entry.cursor
        if records:
            publish_log_lines(self.bus, self.node, records, self.max_lines)
            self.counters.add_sent(len(records))
        if cursor != self.cursor and cursor is not None:
            self.cursor = cursor  # only now: every entry up to it was handed over
            if self._checkpoint is not None:
                self._checkpoint.put(_CHECKPOINT_KEY, {"cursor": cursor})
                self._checkpoint.save_if_due()

    def _log_stderr(self, chunk: bytes, logged: int) -> int:
        for line in chunk.decode("utf-8", errors="replace").splitlines():
            if line.strip() and logged < _STDERR_LINES_LOGGED:
                log.warning("journalctl says", extra={"collector": self.name,
                                                      "message": line[:500]})
                logged += 1
        return logged


def unit_journal_collector(
    bus: Publisher, node: str, units: Sequence[str], max_lines_per_message: int,
    checkpoint: Path | None = None, from_start: bool = False,
    program: Sequence[str] = ("journalctl",),
) -> JournalCollector:
    """Follows the journal of systemd `units` (log.source=journald, systemd.unit=...)."""
    if not units:
        raise ValueError("no systemd units to follow")
    return JournalCollector(bus, node, [f"--unit={u}" for u in units], "journald",
                            max_lines_per_message, checkpoint, from_start, program)
