"""Tests for the log-file collector: tailing (start, partial lines, rotation) and batching."""

from __future__ import annotations

import os
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
        files: list[TailedFile] | None = None, max_lines: int = 100, from_start: bool = False
    ) -> LogFileCollector:
        collector = LogFileCollector(
            bus, files or [TailedFile(log, "n1", "kernel")],  # type: ignore[arg-type]
            interval_s=3600.0, max_lines_per_message=max_lines, from_start=from_start,
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
