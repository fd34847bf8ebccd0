"""Tests for the log-file collector: tailing, rotation, checkpoints, multi-line records, junk."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from collector_fakes import RecordingBus, Tally
from vigil.collectors.log_file import LogFileCollector, TailedFile, line_time
from vigil.sim.cluster import SimCluster

from vigil.otlp import LogBatch, decode_logs

NOW = 1_718_000_060.0
STAMP = "2024-06-10T06:13:20.500000+00:00"  # a journalctl short-iso-precise time...
STAMPED_AT = 1_718_000_000.5  # ...and the instant it names

MakeCollector = Callable[..., LogFileCollector]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "kern.log"


@pytest.fixture
def make_collector(bus: RecordingBus, tally: Tally, log: Path) -> MakeCollector:
    def make(
        files: list[TailedFile] | None = None, max_lines: int = 100, from_start: bool = False,
        checkpoint: Path | None = None, max_line_bytes: int = 1 << 20,
        multiline: tuple[str, ...] = (), rotate_wait_s: float = 5.0,
    ) -> LogFileCollector:
        collector = LogFileCollector(
            bus, files or [TailedFile(log, "n1", "kernel", multiline)],
            interval_s=3600.0, max_lines_per_message=max_lines, from_start=from_start,
            checkpoint=checkpoint, max_line_bytes=max_line_bytes, rotate_wait_s=rotate_wait_s,
        )
        collector.counters = tally.component
        return collector

    return make


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def _batches(bus: RecordingBus) -> list[LogBatch]:
    """One LogBatch per published message, checking each is a single-batch OTLP logs request."""
    out = []
    for message in bus.published:
        (batch,) = decode_logs(message.value)
        out.append(batch)
    return out


def _bodies(bus: RecordingBus) -> list[str]:
    return [line.body for batch in _batches(bus) for line in batch.lines]


def test_starts_at_the_end_of_a_file_that_was_already_there(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("old one\nold two\n")
    collector = make_collector()

    collector.collect(NOW)
    assert bus.published == []

    _append(log, "new\n")
    collector.collect(NOW + 1)
    assert _bodies(bus) == ["new"]


def test_publishes_lines_as_otlp_logs_keyed_by_node(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)
    _append(log, "first\nsecond\n")

    collector.collect(NOW + 1)

    assert [(p.topic, p.key, p.headers) for p in bus.published] == [("vigil.logs", "n1", None)]
    (batch,) = _batches(bus)
    assert batch.resource == {"host.name": "n1", "vigil.entity": "node:n1"}
    assert [line.body for line in batch.lines] == ["first", "second"]
    for line in batch.lines:
        assert line.attributes == {"log.file.path": str(log), "log.source": "kernel"}
        assert line.timestamp == NOW + 1  # no leading time in the line: the collection time
    assert tally.totals() == {"received": 2, "sent": 2, "dropped": 0, "errored": 0}


def test_from_start_reads_the_whole_file(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text(f"{STAMP} n1 kernel: stamped\nno stamp\n\nafter a blank line\n")

    make_collector(from_start=True).collect(NOW)

    (batch,) = _batches(bus)
    assert [(line.body, line.timestamp) for line in batch.lines] == [
        (f"{STAMP} n1 kernel: stamped", pytest.approx(STAMPED_AT, abs=1e-6)),
        ("no stamp", NOW),
        ("after a blank line", NOW),
    ]


def test_a_file_that_appears_later_is_read_from_its_start(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    collector = make_collector()
    collector.collect(NOW)  # nothing there yet
    assert bus.published == []

    log.write_text("written before the next poll\n")
    collector.collect(NOW + 1)

    assert _bodies(bus) == ["written before the next poll"]


def test_a_partial_last_line_waits_for_its_newline(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)

    _append(log, "complete\nNVRM: Xid (PCI:0000:3b:00): 7")
    collector.collect(NOW + 1)
    assert _bodies(bus) == ["complete"]

    collector.collect(NOW + 2)  # no new bytes: still held
    assert _bodies(bus) == ["complete"]

    _append(log, "9, pid=1234, name=python, GPU has fallen off the bus.\n")
    collector.collect(NOW + 3)
    assert _bodies(bus) == [
        "complete",
        "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.",
    ]


def test_rotation_by_rename_follows_the_new_file(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("before start\n")
    collector = make_collector()
    collector.collect(NOW)
    _append(log, "before rotation\n")
    collector.collect(NOW + 1)

    log.rename(log.with_name("kern.log.1"))
    collector.collect(NOW + 2)  # between rename and create: nothing to read, nothing lost
    # Longer than the old file, so only the new inode can tell that this is another file.
    after = "after rotation, a line longer than the whole old file"
    log.write_text(after + "\n")
    collector.collect(NOW + 3)
    _append(log, "and more\n")
    collector.collect(NOW + 4)

    assert _bodies(bus) == ["before rotation", after, "and more"]


def test_lines_written_just_before_rotation_are_not_lost(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)

    _append(log, "last words of the old file\n")  # no poll between this write and the rename
    log.rename(log.with_name("kern.log.1"))
    log.write_text("first of the new file\n")
    collector.collect(NOW + 1)

    assert _bodies(bus) == ["last words of the old file", "first of the new file"]


def test_rotation_by_atomic_replace_is_read_whole(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)
    _append(log, "x\n")
    collector.collect(NOW + 1)

    replacement = log.with_name("kern.log.new")
    replacement.write_text("a much longer first line than the old file had\nsecond\n")
    os.replace(replacement, log)  # atomic swap: same name, new inode
    collector.collect(NOW + 2)

    assert _bodies(bus) == ["x", "a much longer first line than the old file had", "second"]


def test_truncation_starts_again_from_the_top(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)
    _append(log, "line one\nline two\n")
    collector.collect(NOW + 1)

    log.write_text("short\n")  # copytruncate: same inode, smaller than where we were
    collector.collect(NOW + 2)

    assert _bodies(bus) == ["line one", "line two", "short"]


@pytest.mark.parametrize(("lines", "sizes"), [(25, [10, 10, 5]), (20, [10, 10]), (3, [3])])
def test_many_lines_split_into_messages_of_at_most_max_lines(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    lines: int, sizes: list[int],
) -> None:
    log.write_text("".join(f"line {i}\n" for i in range(lines)))

    make_collector(max_lines=10, from_start=True).collect(NOW)

    assert [len(batch.lines) for batch in _batches(bus)] == sizes
    assert {p.key for p in bus.published} == {"n1"}
    assert _bodies(bus) == [f"line {i}" for i in range(lines)]
    assert tally.totals()["sent"] == lines


def test_each_file_is_keyed_by_its_own_node(
    tmp_path: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    kernel, training = tmp_path / "kern.log", tmp_path / "train.log"
    kernel.write_text("kernel line\n")
    training.write_text("training line\n")
    files = [TailedFile(kernel, "gpu-a-001", "kernel"),
             TailedFile(training, "gpu-a-002", "training")]

    make_collector(files=files, from_start=True).collect(NOW)

    assert [(p.key, [line.body for line in b.lines], b.lines[0].attributes["log.source"])
            for p, b in zip(bus.published, _batches(bus), strict=True)] == [
        ("gpu-a-001", ["kernel line"], "kernel"), ("gpu-a-002", ["training line"], "training"),
    ]


def test_reads_what_the_simulator_injects(
    cluster: SimCluster, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    node = cluster.nodes["gpu-a-001"]
    collector = make_collector(files=[TailedFile(node.kernel_log, node.name, "kernel")])
    collector.collect(NOW)

    injection = cluster.inject("gpu.xid.79", "gpu:gpu-a-001/3", STAMPED_AT)
    collector.collect(NOW + 1)

    (batch,) = _batches(bus)
    assert [line.body for line in batch.lines] == [injection.log_line]
    assert batch.lines[0].timestamp == pytest.approx(STAMPED_AT, abs=1e-6)


# --- rotation while running ---------------------------------------------------------------


def _rotate(log: Path, keep: int = 3) -> None:
    """logrotate without copytruncate: shift app.log.N up by one, rename the file to .1."""
    for n in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            older.rename(log.with_name(f"{log.name}.{n + 1}"))
    log.rename(log.with_name(f"{log.name}.1"))


def _copytruncate(log: Path, copy: str = "kern.log.1") -> None:
    shutil.copyfile(log, log.with_name(copy))
    with log.open("r+b") as f:
        f.truncate(0)


def test_a_writer_still_appending_to_the_renamed_file_is_followed_until_it_moves_on(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)
    with log.open("a", buffering=1) as writer:  # an application between rename and reopen
        writer.write("one\n")
        _rotate(log)
        log.write_text("")  # logrotate's `create`: the new, empty file appears at once
        collector.collect(NOW + 1)
        writer.write("two, still into the renamed file\n")
        collector.collect(NOW + 2)
    _append(log, "three, after the writer reopened\n")
    collector.collect(NOW + 3)

    assert _bodies(bus) == [
        "one", "two, still into the renamed file", "three, after the writer reopened"]


def test_a_renamed_file_is_let_go_after_rotate_wait_when_nothing_replaces_it(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector(rotate_wait_s=5.0)
    collector.collect(NOW)
    _append(log, "last of the old file\n")
    _rotate(log)
    collector.collect(NOW + 1)
    collector.collect(NOW + 7)  # quiet for 6 s: the writer is gone, stop waiting for it

    _append(log.with_name("kern.log.1"), "too late: not read\n")
    log.write_text("new file\n")
    collector.collect(NOW + 8)

    assert _bodies(bus) == ["last of the old file", "new file"]


def test_two_rotations_between_polls_read_every_file_in_order(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)

    _append(log, "a\n")
    _rotate(log)
    log.write_text("b\n")
    _rotate(log)
    log.write_text("c\n")
    collector.collect(NOW + 1)

    assert _bodies(bus) == ["a", "b", "c"]


def test_copytruncate_between_polls_keeps_what_was_written_before_the_copy(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)
    _append(log, "read before\n")
    collector.collect(NOW + 1)

    _append(log, "written before the copy\n")
    _copytruncate(log)
    _append(log, "after truncation, longer than what was read\n")
    collector.collect(NOW + 2)

    assert _bodies(bus) == [
        "read before", "written before the copy", "after truncation, longer than what was read"]


def test_a_rotated_file_s_unterminated_last_line_is_published(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)
    _append(log, "complete\nno newline before the rotation")
    _rotate(log)
    log.write_text("next\n")
    collector.collect(NOW + 1)

    assert _bodies(bus) == ["complete", "no newline before the rotation", "next"]


def test_crlf_line_ends_are_stripped(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_bytes(b"dos line\r\nunix line\n")
    make_collector(from_start=True).collect(NOW)
    assert _bodies(bus) == ["dos line", "unix line"]


# --- checkpoints --------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return tmp_path / "state" / "log_file.json"


def test_a_restart_from_the_checkpoint_neither_loses_nor_repeats(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, checkpoint: Path
) -> None:
    log.write_text("before the first start\n")
    first = make_collector(checkpoint=checkpoint)
    first.collect(NOW)
    _append(log, "one\ntwo\n")
    first.collect(NOW + 1)
    _append(log, "three, never polled by the first\n")
    first.shutdown()
    saved = json.loads(checkpoint.read_text())["positions"][str(log)]
    assert saved["offset"] == len("before the first start\none\ntwo\n")
    assert (saved["dev"], saved["ino"]) == (log.stat().st_dev, log.stat().st_ino)

    _append(log, "four, while stopped\n")
    second = make_collector(checkpoint=checkpoint)
    second.collect(NOW + 2)
    second.collect(NOW + 3)

    assert _bodies(bus) == ["one", "two", "three, never polled by the first", "four, while stopped"]


@pytest.mark.parametrize("rotated_name", ["kern.log.1", "kern.log-20240610"])
def test_a_file_rotated_while_stopped_is_finished_before_the_new_one(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, checkpoint: Path,
    rotated_name: str,
) -> None:
    log.write_text("")
    first = make_collector(checkpoint=checkpoint)
    first.collect(NOW)
    _append(log, "one\n")
    first.collect(NOW + 1)
    first.shutdown()

    _append(log, "two, before the rotation\n")
    log.rename(log.with_name(rotated_name))
    log.write_text("three, in the new file\n")
    make_collector(checkpoint=checkpoint).collect(NOW + 2)

    assert _bodies(bus) == ["one", "two, before the rotation", "three, in the new file"]


def test_two_rotations_while_stopped_are_read_oldest_first(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, checkpoint: Path
) -> None:
    log.write_text("")
    first = make_collector(checkpoint=checkpoint)
    first.collect(NOW)
    _append(log, "one\n")
    first.collect(NOW + 1)
    first.shutdown()

    _append(log, "two\n")
    _rotate(log)
    log.write_text("three\n")
    _rotate(log)
    log.write_text("four\n")
    make_collector(checkpoint=checkpoint).collect(NOW + 2)

    assert _bodies(bus) == ["one", "two", "three", "four"]


def test_copytruncate_while_stopped_reads_the_rest_of_the_copy_first(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, checkpoint: Path
) -> None:
    log.write_text("")
    first = make_collector(checkpoint=checkpoint)
    first.collect(NOW)
    _append(log, "one\n")
    first.collect(NOW + 1)
    first.shutdown()

    _append(log, "two, copied before the truncation\n")
    _copytruncate(log)
    _append(log, "three\n")
    make_collector(checkpoint=checkpoint).collect(NOW + 2)

    assert _bodies(bus) == ["one", "two, copied before the truncation", "three"]


def test_a_different_file_on_the_checkpointed_inode_is_read_from_its_start(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, checkpoint: Path
) -> None:
    log.write_text("")
    first = make_collector(checkpoint=checkpoint)
    first.collect(NOW)
    _append(log, "old content\n")
    first.collect(NOW + 1)
    first.shutdown()

    inode = log.stat().st_ino
    log.write_text("other content, longer than the old file was\n")  # same inode, new bytes
    assert log.stat().st_ino == inode
    make_collector(checkpoint=checkpoint).collect(NOW + 2)

    assert _bodies(bus) == ["old content", "other content, longer than the old file was"]


class _FlakyBus(RecordingBus):
    """A bus whose broker can be made unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def publish(
        self, topic: str, value: bytes, key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        super().publish(topic, value, key, headers)


def test_a_position_is_saved_only_after_its_lines_were_published(
    log: Path, checkpoint: Path
) -> None:
    bus = _FlakyBus()
    log.write_text("")
    first = LogFileCollector(bus, [TailedFile(log, "n1", "kernel")], 3600.0, 100,
                             checkpoint=checkpoint)
    first.collect(NOW)
    _append(log, "one\n")
    first.collect(NOW + 1)
    bus.down = True
    _append(log, "two, its publish fails\n")
    with pytest.raises(ConnectionError):
        first.collect(NOW + 2)
    first.shutdown()

    bus.down = False
    LogFileCollector(bus, [TailedFile(log, "n1", "kernel")], 3600.0, 100,
                     checkpoint=checkpoint).collect(NOW + 3)

    assert _bodies(bus) == ["one", "two, its publish fails"]


def test_an_unusable_checkpoint_entry_is_reported_and_ignored(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, checkpoint: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    checkpoint.parent.mkdir()
    checkpoint.write_text(json.dumps({"version": 1, "positions": {str(log): {"offset": "x"}}}))
    log.write_text("there before\n")

    with caplog.at_level(logging.WARNING):
        collector = make_collector(checkpoint=checkpoint)
    collector.collect(NOW)
    _append(log, "new\n")
    collector.collect(NOW + 1)

    assert _bodies(bus) == ["new"]  # as if there were no checkpoint: from the end
    (warning,) = caplog.records
    assert warning.getMessage() == "unusable checkpoint entry ignored"
    assert warning.path == str(log)  # type: ignore[attr-defined]


# --- multi-line records -------------------------------------------------------------------

TRACEBACK = ('Traceback (most recent call last):\n  File "train.py", line 9, in <module>\n'
             "RuntimeError: CUDA error: an illegal memory access was encountered")


def test_a_traceback_is_published_as_one_record_with_its_first_line_s_time(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally
) -> None:
    log.write_text("")
    collector = make_collector(multiline=("python",))
    collector.collect(NOW)
    _append(log, f"{STAMP} step 9 failed\n{TRACEBACK}\n{STAMP} restarting\n")
    collector.collect(NOW + 1)

    (batch,) = _batches(bus)
    assert [(line.body, line.timestamp) for line in batch.lines] == [
        (f"{STAMP} step 9 failed", pytest.approx(STAMPED_AT, abs=1e-6)),
        (TRACEBACK, NOW + 1),
        (f"{STAMP} restarting", pytest.approx(STAMPED_AT, abs=1e-6)),
    ]
    assert tally.totals()["received"] == 5 and tally.totals()["sent"] == 3


def test_an_open_record_is_published_after_the_flush_timeout(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector(multiline=("python",))
    collector.collect(NOW)
    _append(log, TRACEBACK + "\n")  # the process died: nothing follows its traceback
    collector.collect(NOW + 0.5)
    assert _bodies(bus) == []

    collector.collect(NOW + 2)

    assert _bodies(bus) == [TRACEBACK]


def test_a_record_open_at_shutdown_is_sent_whole_after_a_restart(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, checkpoint: Path
) -> None:
    log.write_text("")
    first = make_collector(multiline=("python",), checkpoint=checkpoint)
    first.collect(NOW)
    head, rest = TRACEBACK.rsplit("\n", 1)
    _append(log, head + "\n")
    first.collect(NOW + 0.1)
    first.shutdown()  # the checkpoint stays at the traceback's first line

    _append(log, rest + "\nnext\n")
    make_collector(multiline=("python",), checkpoint=checkpoint).collect(NOW + 1)

    assert _bodies(bus) == [TRACEBACK, "next"]


def test_without_a_checkpoint_shutdown_sends_the_open_record(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector(multiline=("python",))
    collector.collect(NOW)
    _append(log, TRACEBACK + "\n")
    collector.collect(NOW + 0.1)

    collector.shutdown()

    assert _bodies(bus) == [TRACEBACK]


def test_a_record_never_spans_a_rotation(
    log: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    log.write_text("")
    collector = make_collector(multiline=("indent",))
    collector.collect(NOW)
    _append(log, "head\n  continued\n")
    _rotate(log)
    log.write_text("  indented first line of the new file\n")
    collector.collect(NOW + 0.1)
    collector.collect(NOW + 5)

    assert _bodies(bus) == ["head\n  continued", "  indented first line of the new file"]


def test_an_unknown_multiline_rule_stops_construction(
    log: Path, make_collector: MakeCollector
) -> None:
    with pytest.raises(ValueError, match=f"{log}: unknown multi-line rule"):
        make_collector(multiline=("pyhton",))


# --- bad input ----------------------------------------------------------------------------


def _skips(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.path, r.offset, r.reason) for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "log line skipped"]


def test_a_10_mb_line_between_good_lines_is_skipped_and_reported(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log.write_text("")
    collector = make_collector()
    collector.collect(NOW)
    with log.open("ab") as f:
        f.write(b"before\n" + b"x" * 10_000_000 + b"\nafter\n")

    with caplog.at_level(logging.WARNING):
        collector.collect(NOW + 1)

    assert _bodies(bus) == ["before", "after"]
    assert tally.totals() == {"received": 3, "sent": 2, "dropped": 0, "errored": 1}
    ((path, offset, reason),) = _skips(caplog)
    assert (path, offset) == (str(log), 7)
    assert "max_line_bytes (1048576)" in reason


def test_binary_junk_is_skipped_and_reported_with_its_offset(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nul = b"\x00\x00\x00\x00 hole left by a writer after copytruncate"
    invalid = bytes(range(128, 256))
    log.write_bytes(b"good one\n" + nul + b"\n" + invalid + b"\ncaf\xe9 latin-1\ngood two\n")

    with caplog.at_level(logging.WARNING):
        make_collector(from_start=True).collect(NOW)

    assert _bodies(bus) == ["good one", "caf\ufffd latin-1", "good two"]
    assert tally.totals()["errored"] == 2
    assert [(offset, reason.split(":")[0]) for _, offset, reason in _skips(caplog)] == [
        (9, "NUL bytes"), (10 + len(nul), "mostly invalid UTF-8")]


def test_an_unreadable_file_does_not_hold_up_the_others(
    tmp_path: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, good = tmp_path / "broken.log", tmp_path / "good.log"
    broken.mkdir()  # opening it fails, even for root
    good.write_text("still read\n")
    collector = make_collector(files=[TailedFile(broken, "n1", "kernel"),
                                      TailedFile(good, "n1", "kernel")], from_start=True)

    with caplog.at_level(logging.WARNING):
        collector.collect(NOW)
        collector.collect(NOW + 1)

    assert _bodies(bus) == ["still read"]
    assert tally.totals()["errored"] == 2
    (warning,) = caplog.records  # once, not every interval
    assert warning.getMessage() == "log file unreadable"
    assert warning.path == str(broken)  # type: ignore[attr-defined]


def test_a_binary_file_is_reported_briefly(
    log: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log.write_bytes(b"\x00\xff\n" * 1000)

    with caplog.at_level(logging.WARNING):
        make_collector(from_start=True).collect(NOW)

    assert bus.published == []
    assert tally.totals()["errored"] == 1000
    assert len(_skips(caplog)) == 5
    (summary,) = [r for r in caplog.records if r.getMessage() == "more log lines skipped"]
    assert summary.count == 995  # type: ignore[attr-defined]


# --- line_time ----------------------------------------------------------------------------

FALLBACK = -1.0
AT_NOON = datetime(2024, 6, 10, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2024-06-10T12:00:00.123456+00:00 n1 kernel: x", AT_NOON + 0.123456),
        ("2024-06-10T12:00:00.123456+0000 n1 kernel: x", AT_NOON + 0.123456),
        ("2024-06-10T14:00:00+02:00 n1 kernel: x", AT_NOON),
        ("2024-06-10T07:30:00-04:30 n1 kernel: x", AT_NOON),
        ("2024-06-10T12:00:00Z n1 kernel: x", AT_NOON),
        ("2024-06-10T12:00:00.5Z n1 kernel: x", AT_NOON + 0.5),
        ("2024-06-10T12:00:00.123456789Z containerd nanoseconds", AT_NOON + 0.123456),
    ],
)
def test_line_time_reads_a_leading_rfc3339_time(line: str, expected: float) -> None:
    assert line_time(line, FALLBACK) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "line",
    [
        "Jun 10 12:00:00 n1 kernel: syslog time",
        "2024-06-10T12:00:00 n1 kernel: no offset",
        "2024-06-10 12:00:00+00:00 n1 kernel: space, not T",
        "2024-13-45T99:00:00Z looks like a time but is not one",
        "n1 kernel: 2024-06-10T12:00:00Z not at the start",
        "2024-06-10T12:00:00Z",  # no text after it: not a line prefix
        "",
    ],
)
def test_line_time_falls_back_without_a_leading_time(line: str) -> None:
    assert line_time(line, FALLBACK) == FALLBACK
