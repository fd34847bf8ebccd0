"""Tests for the kernel log: /dev/kmsg records, the collector, its checkpoint, the fallback."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from collector_fakes import RecordingBus, Tally
from vigil.collectors.journald import JournalCollector
from vigil.collectors.kernel_log import (
    KMSG,
    KmsgCollector,
    current_boot_id,
    kernel_log_collector,
    parse_kmsg_record,
    split_kmsg_records,
)

from vigil.otlp import LogLine, decode_logs

DATA = Path(__file__).parent / "data"
NOW = 1_718_000_060.0
BOOT_EPOCH = 1_717_913_600.0  # the fixture's node booted a day before NOW
BOOT_ID = "8f2c5e1a-9b7d-4c3e-8a1f-0b2d4e6c8a0f"

MakeCollector = Callable[..., KmsgCollector]


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A file of records standing in for /dev/kmsg (it gives many records per read)."""
    path = tmp_path / "kmsg"
    path.write_bytes(b"")
    return path


@pytest.fixture
def make_collector(bus: RecordingBus, tally: Tally, device: Path) -> MakeCollector:
    def make(checkpoint: Path | None = None, from_start: bool = True,
             boot_id: str = BOOT_ID) -> KmsgCollector:
        collector = KmsgCollector(bus, "gpu-a-017", 3600.0, 100, device=device,
                                  checkpoint=checkpoint, from_start=from_start, boot_id=boot_id,
                                  boot_epoch=BOOT_EPOCH)
        collector.counters = tally.component
        return collector

    return make


def _lines(bus: RecordingBus) -> list[LogLine]:
    return [line for message in bus.published for batch in decode_logs(message.value)
            for line in batch.lines]


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


# --- parsing ------------------------------------------------------------------------------


def test_parses_a_record_with_its_device_dictionary() -> None:
    record = parse_kmsg_record(
        b"3,1880,86413000123,-;mlx5_core 0000:5e:00.0: poll_health:834:(pid 0): "
        b"Fatal error 1 detected\n SUBSYSTEM=pci\n DEVICE=+pci:0000:5e:00.0\n")

    assert (record.level, record.facility, record.seq, record.usec) == (3, 0, 1880, 86413000123)
    assert record.message == (
        "mlx5_core 0000:5e:00.0: poll_health:834:(pid 0): Fatal error 1 detected")
    assert record.dictionary == {"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:5e:00.0"}


def test_unescapes_what_the_kernel_escaped_and_reads_extra_prefix_fields() -> None:
    record = parse_kmsg_record(b"14,7,5,-,caller=T2712;caf\\xc3\\xa9 \\x5cpath \\x1b[0m")

    assert (record.level, record.facility) == (6, 1)  # written to /dev/kmsg by user space
    assert record.message == "caf\u00e9 \\path \x1b[0m"


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (b"no prefix at all", "no ';'"),
        (b"4,x,100,-;seq is not a number", "is not pri,seq,usec"),
        (b"4,12;too few fields", "is not pri,seq,usec"),
        (b"4,-3,100,-;negative", "negative"),
    ],
)
def test_bad_records_are_refused_with_the_reason(record: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_kmsg_record(record)


def test_splits_a_stream_into_records_with_their_continuation_lines() -> None:
    data = (DATA / "kmsg_gpu_node.txt").read_bytes()

    records = split_kmsg_records(data)

    assert len(records) == 11
    mlx5 = parse_kmsg_record(records[4])
    assert mlx5.dictionary["DEVICE"] == "+pci:0000:5e:00.0"
    assert [parse_kmsg_record(r).seq for r in records] == list(range(1876, 1887))


# --- the collector ------------------------------------------------------------------------


def test_publishes_the_fixture_as_kernel_log_lines(
    device: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally
) -> None:
    device.write_bytes((DATA / "kmsg_gpu_node.txt").read_bytes())

    make_collector().collect(NOW)

    assert {(p.topic, p.key) for p in bus.published} == {("vigil.logs", "gpu-a-017")}
    (batch,) = decode_logs(bus.published[0].value)
    assert batch.resource == {"host.name": "gpu-a-017", "vigil.entity": "node:gpu-a-017"}
    lines = _lines(bus)
    xid = lines[1]
    assert xid.body == ("NVRM: Xid (PCI:0000:3b:00): 79, pid=2712, name=python, "
                        "GPU has fallen off the bus.")
    assert xid.severity_text == "warning"
    assert xid.timestamp == pytest.approx(BOOT_EPOCH + 86412.345678, abs=1e-6)
    assert xid.attributes == {"log.source": "kernel"}
    fatal = lines[6]
    assert fatal.severity_text == "crit"
    assert fatal.attributes == {"log.source": "kernel", "kernel.subsystem": "pci",
                                "kernel.device": "+pci:0000:5e:00.0"}
    assert [line.severity_text for line in lines[7:9]] == ["warning", "emerg"]  # EDAC CE, UE
    assert lines[-1].body.endswith("/mnt/ckpt/caf\u00e9\\step-1200")
    assert tally.totals() == {"received": 11, "sent": 11, "dropped": 0, "errored": 0}


def test_without_from_start_only_new_records_are_published(
    device: Path, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    device.write_bytes(b"6,1,100,-;already in the buffer\n")
    collector = make_collector(from_start=False)
    collector.collect(NOW)
    assert bus.published == []

    _append(device, b"4,2,200,-;NVRM: Xid (PCI:0000:3b:00): 94, pid=1, name=x, Contained\n")
    collector.collect(NOW + 1)

    assert [line.body for line in _lines(bus)] == [
        "NVRM: Xid (PCI:0000:3b:00): 94, pid=1, name=x, Contained"]


def test_bad_records_are_counted_reported_and_skipped(
    device: Path, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device.write_bytes((DATA / "kmsg_bad_records.txt").read_bytes())

    with caplog.at_level(logging.WARNING):
        make_collector().collect(NOW)

    assert [line.body[:32] for line in _lines(bus)] == [
        "NVRM: Xid (PCI:0000:3b:00): 13, ", "NVRM: Xid (PCI:0000:3b:00): 31, "]
    skipped = [r for r in caplog.records if r.getMessage() == "kernel log record skipped"]
    assert [(r.device, r.after_seq) for r in skipped] == [  # type: ignore[attr-defined]
        (str(device), 2001), (str(device), 2001)]
    assert tally.totals()["errored"] == 2 + 1  # two bad records, and seq 2002 never came


def test_a_gap_in_sequence_numbers_is_reported_as_lost_records(
    device: Path, make_collector: MakeCollector, tally: Tally, caplog: pytest.LogCaptureFixture
) -> None:
    device.write_bytes(b"6,10,1,-;a\n6,11,2,-;b\n6,15,3,-;c\n")

    with caplog.at_level(logging.WARNING):
        make_collector().collect(NOW)

    (lost,) = [r for r in caplog.records if r.getMessage().startswith("kernel log records lost")]
    assert (lost.after_seq, lost.lost) == (11, 3)  # type: ignore[attr-defined]
    assert tally.totals()["errored"] == 3


# --- checkpoints --------------------------------------------------------------------------


def test_a_restart_in_the_same_boot_skips_what_was_sent(
    device: Path, make_collector: MakeCollector, bus: RecordingBus, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "kernel_log.json"
    device.write_bytes(b"6,1,1,-;one\n6,2,2,-;two\n")
    first = make_collector(checkpoint=checkpoint)
    first.collect(NOW)
    first.shutdown()
    assert json.loads(checkpoint.read_text())["positions"] == {
        f"kmsg:{device}": {"boot_id": BOOT_ID, "seq": 2}}

    _append(device, b"6,3,3,-;three, while stopped\n")
    make_collector(checkpoint=checkpoint, from_start=False).collect(NOW + 1)

    assert [line.body for line in _lines(bus)] == ["one", "two", "three, while stopped"]


def test_after_a_reboot_the_whole_buffer_is_new(
    device: Path, make_collector: MakeCollector, bus: RecordingBus, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "kernel_log.json"
    device.write_bytes(b"6,1,1,-;old boot\n6,2,2,-;old boot again\n")
    first = make_collector(checkpoint=checkpoint)
    first.collect(NOW)
    first.shutdown()

    device.write_bytes(b"6,0,0,-;Linux version 6.8.0\n6,1,5,-;new boot\n")  # seq starts over
    make_collector(checkpoint=checkpoint, from_start=False, boot_id="another-boot").collect(NOW)

    assert [line.body for line in _lines(bus)][2:] == ["Linux version 6.8.0", "new boot"]


# --- choosing the source ------------------------------------------------------------------


def test_falls_back_to_journalctl_where_the_device_cannot_be_read(
    bus: RecordingBus, tmp_path: Path
) -> None:
    collector = kernel_log_collector(bus, "n1", 1.0, 100, device=tmp_path / "no-kmsg",
                                     journal_program=["/usr/bin/journalctl"])

    assert isinstance(collector, JournalCollector)
    assert collector.command() == [
        "/usr/bin/journalctl", "--dmesg", "--output=json", "--follow", "--no-pager", "--all",
        "--lines=0"]
    assert collector.source == "kernel" and collector.name == "kernel_log"


def test_reads_the_device_where_it_can(bus: RecordingBus, device: Path) -> None:
    assert isinstance(kernel_log_collector(bus, "n1", 1.0, 100, device=device), KmsgCollector)


# --- the real /dev/kmsg -------------------------------------------------------------------


def _kmsg_unreadable() -> str:
    try:
        os.close(os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as exc:
        return f"/dev/kmsg cannot be read here ({exc.strerror}): containers lack CAP_SYSLOG"
    return ""


@pytest.mark.skipif(bool(_kmsg_unreadable()), reason=_kmsg_unreadable() or "readable")
def test_reads_the_real_dev_kmsg(bus: RecordingBus, tally: Tally) -> None:
    collector = KmsgCollector(bus, "this-node", 3600.0, 10_000, from_start=True)
    collector.counters = tally.component
    collector.collect(NOW)

    lines = _lines(bus)
    assert lines, "a booted kernel's buffer is never empty"
    assert all(line.attributes["log.source"] == "kernel" for line in lines)
    assert all(line.severity_text for line in lines)
    assert tally.totals()["errored"] == 0  # every real record parsed
    assert current_boot_id()
    if not os.access(KMSG, os.W_OK):
        collector.shutdown()
        pytest.skip("/dev/kmsg is not writable here: cannot check that new records arrive")
    marker = f"vigil test marker {uuid.uuid4()}"
    with open(KMSG, "w") as kmsg:  # as root: one record, tagged so it is easy to recognise
        kmsg.write(f"<6>{marker}\n")
    collector.collect(NOW + 1)
    collector.shutdown()

    assert [line.body for line in _lines(bus)[len(lines):]] == [marker]
