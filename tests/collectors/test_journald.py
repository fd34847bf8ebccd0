"""Tests for following the journal: entry parsing, the journalctl command, cursors, restarts."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_fakes import RecordingBus, Tally
from vigil.collectors.journald import (
    JournalCollector,
    journal_command,
    parse_journal_entry,
    unit_journal_collector,
)

from vigil.otlp import LogLine, decode_logs

DATA = Path(__file__).parent / "data"
KERNEL = (DATA / "journal_kernel.jsonl").read_bytes().splitlines()
UNITS = (DATA / "journal_units.jsonl").read_bytes().splitlines()

# Stands in for journalctl: logs its arguments, prints the entries file (after the cursor it
# was given, or none for --lines=0), then keeps running like `--follow` unless told to exit.
FAKE_JOURNALCTL = """
import json, sys, time
log, entries, then, *args = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\\n")
lines = open(entries, "rb").read().splitlines(keepends=True)
after = [a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")]
if after:
    needle = ('"__CURSOR":"%s"' % after[0]).encode()
    lines = lines[next(i for i, l in enumerate(lines) if needle in l) + 1:]
elif "--lines=0" in args:
    lines = []
sys.stdout.buffer.write(b"".join(lines))
sys.stdout.flush()
if then == "follow":
    time.sleep(60)
"""


def _lines(bus: RecordingBus) -> list[LogLine]:
    return [line for message in bus.published for batch in decode_logs(message.value)
            for line in batch.lines]


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- parsing ------------------------------------------------------------------------------


def test_parses_kernel_entries_with_their_device() -> None:
    xid, _, mlx5, _, usb = (parse_journal_entry(line) for line in KERNEL)

    assert xid.message.startswith("NVRM: Xid (PCI:0000:3b:00): 79,")
    assert xid.timestamp == 1718000000.5
    assert xid.priority == 4
    assert xid.cursor.startswith("s=b4e2a8d6c0f24e1a9c7b5d3f1e0a2c4b;i=2a31;")
    assert xid.attributes == {"syslog.identifier": "kernel"}
    assert mlx5.attributes == {"syslog.identifier": "kernel", "kernel.subsystem": "pci",
                               "kernel.device": "+pci:0000:5e:00.0"}
    assert usb.message == "usb 1-1: Product: Fl\ufffdsh Drive"  # bytes, one of them Latin-1


def test_parses_unit_entries_and_every_shape_of_message() -> None:
    entries = [parse_journal_entry(line.decode()) for line in UNITS]

    assert [e.attributes["systemd.unit"] for e in entries] == [
        "nvidia-fabricmanager.service", "nvidia-fabricmanager.service", "slurmd.service",
        "slurmd.service",  # systemd about slurmd: UNIT= wins over its own init.scope
        "kubelet.service", "kubelet.service"]
    assert entries[2].message == (
        "\x1b[31merror:\x1b[0m _get_joules_task: can't get info from slurmd")
    assert entries[4].message == "Started syncing pod llama-70b-run3/worker-12"  # first of two
    assert entries[5].message == ""  # too large to show: null
    assert [e.priority for e in entries] == [6, 3, 3, 3, 5, 6]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b'{"__CURSOR": "s=1", "__REALTIME_', "not JSON"),
        (b"\xff\xfe\x00junk", "not JSON"),
        (b'["a", "list"]', "not a JSON object"),
        (b'{"__REALTIME_TIMESTAMP": "1", "MESSAGE": "x"}', "no __CURSOR"),
        (b'{"__CURSOR": "s=1", "__REALTIME_TIMESTAMP": "soon", "MESSAGE": "x"}', "microseconds"),
        (b'{"__CURSOR": "s=1", "__REALTIME_TIMESTAMP": "1", "MESSAGE": [300, 1]}', "non-byte"),
        (b'{"__CURSOR": "s=1", "__REALTIME_TIMESTAMP": "1", "MESSAGE": [0, 1, 2]}', "NUL bytes"),
        (b'{"__CURSOR": "s=1", "__REALTIME_TIMESTAMP": "1", "MESSAGE": {"a": 1}}', "unexpected"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(line: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_journal_entry(line)


@pytest.mark.parametrize(
    ("cursor", "from_start", "tail"),
    [(None, False, ["--lines=0"]), (None, True, ["--lines=all"]),
     ("s=abc;i=1", True, ["--after-cursor=s=abc;i=1"])],
)
def test_the_command_is_an_argument_list(
    cursor: str | None, from_start: bool, tail: list[str]
) -> None:
    assert journal_command(["journalctl"], ["--unit=a.service"], cursor, from_start) == [
        "journalctl", "--unit=a.service", "--output=json", "--follow", "--no-pager", "--all",
        *tail]


def test_a_unit_collector_matches_each_unit() -> None:
    collector = unit_journal_collector(RecordingBus(), "n1", ["slurmd.service", "kubelet.service"],
                                       100)
    assert collector.matches == ["--unit=slurmd.service", "--unit=kubelet.service"]
    assert collector.source == "journald"
    with pytest.raises(ValueError, match="no systemd units"):
        unit_journal_collector(RecordingBus(), "n1", [], 100)


# --- the collector, against a stand-in journalctl ------------------------------------------


@pytest.fixture
def entries(tmp_path: Path) -> Path:
    path = tmp_path / "entries.jsonl"
    path.write_bytes(b"\n".join(UNITS[:3]) + b"\n")
    return path


@pytest.fixture
def make_collector(
    bus: RecordingBus, tally: Tally, tmp_path: Path, entries: Path
) -> Iterator[Callable[..., JournalCollector]]:
    started: list[JournalCollector] = []

    def make(then: str = "follow", checkpoint: Path | None = None) -> JournalCollector:
        program = [sys.executable, "-c", FAKE_JOURNALCTL, str(tmp_path / "argv.log"),
                   str(entries), then]
        collector = JournalCollector(bus, "gpu-a-017", ["--unit=slurmd.service"], "journald",
                                     100, checkpoint=checkpoint, from_start=True,
                                     program=program, restart_delay_s=0.05)
        collector.counters = tally.component
        started.append(collector)
        return collector

    yield make
    for collector in started:
        collector.shutdown()


def _argv_log(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "argv.log").read_text().splitlines()]


def test_publishes_entries_as_log_lines_keyed_by_node(
    make_collector: Callable[..., JournalCollector], bus: RecordingBus, tally: Tally
) -> None:
    collector = make_collector()
    collector.start()
    _wait_for(lambda: len(_lines(bus)) == 3, "three entries")
    collector.shutdown()

    assert {(p.topic, p.key) for p in bus.published} == {("vigil.logs", "gpu-a-017")}
    first = _lines(bus)[0]
    assert first.body.startswith("Successfully configured all the available NVSwitches")
    assert first.timestamp == 1718000010.5
    assert first.severity_text == "info"
    assert first.attributes == {"log.source": "journald",
                                "systemd.unit": "nvidia-fabricmanager.service",
                                "syslog.identifier": "nv-fabricmanager"}
    assert tally.totals() == {"received": 3, "sent": 3, "dropped": 0, "errored": 0}


def test_a_restart_resumes_after_the_saved_cursor(
    make_collector: Callable[..., JournalCollector], bus: RecordingBus, tmp_path: Path,
    entries: Path,
) -> None:
    checkpoint = tmp_path / "journald.json"
    first = make_collector(checkpoint=checkpoint)
    first.start()
    _wait_for(lambda: len(_lines(bus)) == 3, "the first three entries")
    first.shutdown()
    last_cursor = json.loads(UNITS[2])["__CURSOR"]
    assert json.loads(checkpoint.read_text())["positions"] == {"journal": {"cursor": last_cursor}}

    with entries.open("ab") as f:  # logged while the collector was stopped
        f.write(b"\n".join(UNITS[3:5]) + b"\n")
    second = make_collector(checkpoint=checkpoint)
    second.start()
    _wait_for(lambda: len(_lines(bus)) >= 5, "the two new entries")
    second.shutdown()

    assert len(_lines(bus)) == 5
    assert _lines(bus)[3].body == "slurmd.service: Main process exited, code=killed, status=9/KILL"
    assert _argv_log(tmp_path)[1][-1] == f"--after-cursor={last_cursor}"


def test_a_malformed_saved_cursor_is_reported_and_ignored(
    make_collector: Callable[..., JournalCollector], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    checkpoint = tmp_path / "journald.json"
    checkpoint.write_text(json.dumps(
        {"version": 1, "positions": {"journal": {"cursor": "s=zz;i=1; --output=short"}}}))

    with caplog.at_level(logging.WARNING):
        collector = make_collector(checkpoint=checkpoint)

    assert collector.cursor is None
    assert collector.command()[-1] == "--lines=all"
    assert caplog.records[0].getMessage() == "unusable journal cursor ignored"


def test_journalctl_is_started_again_after_it_exits(
    make_collector: Callable[..., JournalCollector], bus: RecordingBus, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = make_collector(then="exit")

    with caplog.at_level(logging.WARNING):
        collector.start()
        _wait_for(lambda: (tmp_path / "argv.log").exists()
                  and len(_argv_log(tmp_path)) >= 3, "two restarts")
        collector.shutdown()

    assert len(_lines(bus)) == 3  # each run resumed after the last entry: nothing twice
    runs = _argv_log(tmp_path)
    assert runs[0][-1] == "--lines=all"
    assert all(run[-1] == f"--after-cursor={json.loads(UNITS[2])['__CURSOR']}"
               for run in runs[1:])
    assert any(r.getMessage() == "journalctl exited; starting it again" for r in caplog.records)


def test_bad_lines_are_counted_reported_and_skipped(
    make_collector: Callable[..., JournalCollector], bus: RecordingBus, tally: Tally,
    entries: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    entries.write_bytes(UNITS[0] + b"\n{broken json\n\x00\x01\x02 binary\n" + UNITS[1] + b"\n")
    collector = make_collector()

    with caplog.at_level(logging.WARNING):
        collector.start()
        _wait_for(lambda: len(_lines(bus)) == 2, "the two good entries")
        collector.shutdown()

    skipped = [r for r in caplog.records if r.getMessage() == "journal entry skipped"]
    assert [r.offset for r in skipped] == [  # type: ignore[attr-defined]
        len(UNITS[0]) + 1, len(UNITS[0]) + 1 + len(b"{broken json\n")]
    assert skipped[0].after_cursor == json.loads(UNITS[0])["__CURSOR"]  # type: ignore[attr-defined]
    assert tally.totals() == {"received": 4, "sent": 2, "dropped": 0, "errored": 2}


def test_a_missing_journalctl_is_reported_and_the_collector_keeps_running(
    bus: RecordingBus, tally: Tally, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collector = JournalCollector(bus, "n1", ["--dmesg"], "kernel", 100,
                                 program=[str(tmp_path / "no-journalctl")], restart_delay_s=0.05)
    collector.counters = tally.component

    with caplog.at_level(logging.ERROR):
        collector.start()
        _wait_for(lambda: tally.totals()["errored"] >= 2, "a retry")
        collector.shutdown()

    (error,) = caplog.records  # once, though it was tried again
    assert error.getMessage() == "journalctl could not be started"


# --- a real journald ----------------------------------------------------------------------

JOURNALD = Path("/usr/lib/systemd/systemd-journald")


def _journald_unavailable() -> str:
    if shutil.which("journalctl") is None or not JOURNALD.exists():
        return "journalctl and systemd-journald are not both installed"
    if os.geteuid() != 0:
        return "starting a journald namespace instance needs root"
    return ""


@pytest.fixture
def journald_namespace() -> Iterator[str]:
    """A journald instance of its own (`systemd-journald NAMESPACE`), removed afterwards."""
    name = f"vigiltest{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen([str(JOURNALD), name], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    sockets = Path(f"/run/systemd/journal.{name}")
    try:
        _wait_for(lambda: (sockets / "socket").exists(), "journald's socket")
        yield name
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(sockets, ignore_errors=True)
        machine_id = Path("/etc/machine-id").read_text().strip()
        for folder in ("/var/log/journal", "/run/log/journal"):
            shutil.rmtree(f"{folder}/{machine_id}.{name}", ignore_errors=True)


def _log_to(namespace: str, message: str, unit: str) -> None:
    """Send an entry with journald's native protocol, as a root daemon speaking of `unit`."""
    entry = f"MESSAGE={message}\nPRIORITY=3\nSYSLOG_IDENTIFIER=vigil-test\n"
    entry += f"OBJECT_SYSTEMD_UNIT={unit}\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.sendto(entry.encode(), f"/run/systemd/journal.{namespace}/socket")


@pytest.mark.integration
@pytest.mark.skipif(bool(_journald_unavailable()), reason=_journald_unavailable() or "available")
def test_follows_a_real_journal_across_a_restart(
    journald_namespace: str, bus: RecordingBus, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "journald.json"

    def collector() -> JournalCollector:
        return unit_journal_collector(
            bus, "n1", ["trainer.service"], 100, checkpoint=checkpoint, from_start=True,
            program=["journalctl", f"--namespace={journald_namespace}"])

    def bodies() -> list[str]:
        return [line.body for line in _lines(bus)]

    _log_to(journald_namespace, "one, before the start", "trainer.service")
    first = collector()
    first.start()
    _wait_for(lambda: bodies() == ["one, before the start"], "the first entry")
    _log_to(journald_namespace, "two, while running", "trainer.service")
    _wait_for(lambda: len(bodies()) == 2, "the second entry")
    first.shutdown()

    _log_to(journald_namespace, "about another unit", "other.service")
    _log_to(journald_namespace, "three, while stopped", "trainer.service")
    second = collector()
    second.start()
    _wait_for(lambda: len(bodies()) >= 3, "the entry logged while stopped")
    second.shutdown()

    assert bodies() == ["one, before the start", "two, while running", "three, while stopped"]
    line = _lines(bus)[2]
    assert line.attributes["systemd.unit"] == "trainer.service"
    assert line.attributes["log.source"] == "journald"
    assert line.severity_text == "err"
