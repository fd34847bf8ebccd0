"""Real log rotation while a writer writes: every line arrives exactly once, in order.

A writer thread appends numbered lines at a steady rate through a file handle it keeps, the
way applications do, and reopens the path only when told (logrotate's postrotate signal).
Meanwhile the test rotates the log as logrotate would: renames (`app.log` -> `app.log.1` ->
`app.log.2` ..., then `create` a new empty file, then signal), once a copytruncate, and once
a rename while the collector is stopped, after which a new collector resumes from the
checkpoint. The collector publishes to an in-memory bus: this test is about the files.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest
from vigil.collectors.log_file import LogFileCollector, TailedFile

from vigil.otlp import decode_logs

LINES_PER_S = 2000
PAUSE_S = 0.3  # between rotation steps; the writer writes ~600 lines in that time
REOPEN_LAG_S = 0.05  # the writer keeps writing to the renamed file this long


def _collector_fakes() -> ModuleType:
    """tests/collectors/collector_fakes.py, whether or not that folder is on sys.path."""
    if "collector_fakes" in sys.modules:
        return sys.modules["collector_fakes"]
    path = Path(__file__).parents[1] / "collectors" / "collector_fakes.py"
    spec = importlib.util.spec_from_file_location("collector_fakes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["collector_fakes"] = module
    spec.loader.exec_module(module)
    return module


class _Writer(threading.Thread):
    """Writes `line NNNNNN ...` lines at a steady rate; reopens the path when asked."""

    def __init__(self, path: Path, total: int) -> None:
        super().__init__(name="log-writer", daemon=True)
        self.path = path
        self.total = total
        self.written = 0
        self.reopen = threading.Event()
        self.lock = threading.Lock()  # held around each write; the rotator takes it to pause us

    def run(self) -> None:
        padding = "x" * 100
        out = self.path.open("a", buffering=1)  # O_APPEND, like every logger
        started = time.monotonic()
        while self.written < self.total:
            with self.lock:
                if self.reopen.is_set():
                    out.close()
                    out = self.path.open("a", buffering=1)
                    self.reopen.clear()
                out.write(f"line {self.written:06d} {padding}\n")
                self.written += 1
            ahead = self.written / LINES_PER_S - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        out.close()


def _shift(log: Path) -> None:
    numbered = sorted((int(p.name.rsplit(".", 1)[1]), p) for p in log.parent.glob(f"{log.name}.*"))
    for n, path in reversed(numbered):
        path.rename(log.with_name(f"{log.name}.{n + 1}"))


def _rotate_by_rename(log: Path, writer: _Writer) -> None:
    """logrotate's default: rename, `create` a new empty file, then signal the writer."""
    _shift(log)
    log.rename(log.with_name(f"{log.name}.1"))
    log.touch()
    time.sleep(REOPEN_LAG_S)  # the writer has not reopened yet: it still writes to app.log.1
    writer.reopen.set()


def _copytruncate(log: Path, writer: _Writer) -> None:
    """logrotate's copytruncate, with the writer paused from the copy to the truncation.

    Lines written between the copy and the truncation are in neither file afterwards: that
    loss is copytruncate's own (logrotate documents it), and no reader can undo it. Pausing
    the writer closes that window so the test checks only what the collector is answerable
    for: the lines written after its last read and before the copy, which it must find in
    the copy.
    """
    with writer.lock:
        _shift(log)
        shutil.copyfile(log, log.with_name(f"{log.name}.1"))
        with log.open("r+b") as f:
            f.truncate(0)


@pytest.mark.integration
def test_every_line_arrives_once_in_order_through_rotations_and_a_restart(
    tmp_path: Path,
) -> None:
    bus = _collector_fakes().RecordingBus()
    log = tmp_path / "app.log"
    log.touch()
    checkpoint = tmp_path / "state" / "log_file.json"
    total = int(LINES_PER_S * PAUSE_S * 9)

    def start_collector() -> LogFileCollector:
        collector = LogFileCollector(bus, [TailedFile(log, "n1", "training")], interval_s=0.05,
                                     max_lines_per_message=500, from_start=True,
                                     checkpoint=checkpoint)
        collector.start()
        return collector

    def numbers() -> list[int]:
        return [int(line.body.split()[1]) for message in bus.published
                for batch in decode_logs(message.value) for line in batch.lines]

    writer = _Writer(log, total)
    collector = start_collector()
    writer.start()
    for step in ("rename", "rename", "copytruncate", "restart", "rename", "rename"):
        time.sleep(PAUSE_S)
        if step == "rename":
            _rotate_by_rename(log, writer)
        elif step == "copytruncate":
            _copytruncate(log, writer)
        else:  # stop, rotate while nobody reads, and start again from the checkpoint
            collector.shutdown()
            _rotate_by_rename(log, writer)
            time.sleep(PAUSE_S)
            collector = start_collector()
    writer.join(timeout=30)
    deadline = time.monotonic() + 20
    while len(numbers()) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    collector.shutdown()

    got = numbers()
    assert writer.written == total
    assert len(got) == total, f"{total - len(set(got))} missing, {len(got) - len(set(got))} twice"
    assert got == list(range(total))
    assert len(list(tmp_path.glob("app.log.*"))) == 6  # every rotation happened
