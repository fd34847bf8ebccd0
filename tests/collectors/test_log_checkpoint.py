"""Tests for the checkpoint file: atomic replacement, throttled saves, unreadable files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from vigil.collectors.log_checkpoint import CheckpointFile
from vigil.collectors.log_rotation import FilePosition

ENTRY: dict[str, int | str] = {"dev": 2049, "ino": 131075, "offset": 4096, "fingerprint": "ab" * 16,
         "fingerprint_bytes": 1024}


def test_positions_survive_a_new_instance(tmp_path: Path) -> None:
    path = tmp_path / "state" / "log_file.json"  # the folder is made when first needed
    first = CheckpointFile(path)
    first.put("/var/log/kern.log", ENTRY)
    first.save()

    second = CheckpointFile(path)

    assert second.get("/var/log/kern.log") == ENTRY
    assert second.get("/var/log/other.log") is None
    assert second.load_error is None


def test_the_file_is_replaced_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checkpoint = CheckpointFile(path)
    checkpoint.put("a", ENTRY)
    checkpoint.save()
    inode = path.stat().st_ino

    checkpoint.put("a", {**ENTRY, "offset": 8192})
    checkpoint.save()

    assert path.stat().st_ino != inode  # renamed over, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.json"]
    assert json.loads(path.read_text())["positions"]["a"]["offset"] == 8192


def test_saves_are_throttled_but_a_forced_save_writes(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checkpoint = CheckpointFile(path, min_interval_s=3600)
    checkpoint.put("a", ENTRY)
    assert checkpoint.save_if_due()  # the first save is due at once

    checkpoint.put("a", {**ENTRY, "offset": 1})
    assert not checkpoint.save_if_due()  # an hour has not passed
    assert CheckpointFile(path).get("a") == ENTRY

    checkpoint.save()  # shutdown
    assert CheckpointFile(path).get("a") == {**ENTRY, "offset": 1}


def test_nothing_is_written_when_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    checkpoint = CheckpointFile(path, min_interval_s=0)
    checkpoint.put("a", ENTRY)
    checkpoint.save()
    os.utime(path, ns=(0, 0))

    checkpoint.put("a", dict(ENTRY))  # the same position again
    assert not checkpoint.save_if_due()
    checkpoint.save()

    assert path.stat().st_mtime_ns == 0


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[1, 2]", b'{"positions": [1]}', b'{"positions": {"a": 3}}',
     b'{"version": 1}', b"\xff\xfe binary"],
)
def test_an_unreadable_checkpoint_is_reported_and_started_over(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cp.json"
    path.write_bytes(content)

    with caplog.at_level(logging.WARNING):
        checkpoint = CheckpointFile(path)

    assert checkpoint.load_error is not None
    assert checkpoint.get("a") is None
    (record,) = caplog.records
    assert record.path == str(path)  # type: ignore[attr-defined]
    checkpoint.put("a", ENTRY)
    checkpoint.save()
    assert CheckpointFile(path).get("a") == ENTRY


def test_file_position_round_trips_through_an_entry() -> None:
    position = FilePosition(dev=1, ino=2, offset=3, fingerprint="f" * 32, fingerprint_bytes=4)
    assert FilePosition.from_entry(position.to_entry()) == position


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"offset": -1}, "offset must be a non-negative integer"),
        ({"ino": "131075"}, "ino must be"),
        ({"dev": True}, "dev must be"),
        ({"fingerprint": None}, "fingerprint must be a string"),
    ],
)
def test_file_position_names_what_is_wrong_with_an_entry(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FilePosition.from_entry({**ENTRY, **change})
