"""Tests for recognising rotated files: sibling order, successors, identity with fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

from vigil.collectors.log_rotation import (
    FilePosition,
    fingerprint,
    rotation_chain,
    successor,
)


def _names(path: Path) -> list[str]:
    return [p.name for p, _ in rotation_chain(path)]


def test_numbered_siblings_come_oldest_first_then_the_file(tmp_path: Path) -> None:
    for name in ("app.log", "app.log.1", "app.log.10", "app.log.2", "app.log.3.gz",
                 "app.log.bak", "app.logger", "other.log.1"):
        (tmp_path / name).write_text(name)

    assert _names(tmp_path / "app.log") == ["app.log.10", "app.log.2", "app.log.1", "app.log"]


def test_dated_siblings_come_in_date_order(tmp_path: Path) -> None:
    for name in ("app.log-20240611", "app.log-20240609", "app.log-20240610-1718000000"):
        (tmp_path / name).write_text(name)

    # The file itself was rotated away and not yet recreated: only the siblings.
    assert _names(tmp_path / "app.log") == [
        "app.log-20240609", "app.log-20240610-1718000000", "app.log-20240611"]


def test_successor_is_the_next_newer_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    for name in ("app.log.2", "app.log.1", "app.log"):
        (tmp_path / name).write_text(name)
    old = (tmp_path / "app.log.2").stat()

    assert successor(log, old.st_dev, old.st_ino, old.st_mtime_ns) == tmp_path / "app.log.1"
    newest = log.stat()
    assert successor(log, newest.st_dev, newest.st_ino, newest.st_mtime_ns) is None


def test_a_deleted_file_is_placed_by_its_modification_time(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    for i, name in enumerate(("app.log.2", "app.log.1", "app.log")):
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, ns=(0, (i + 1) * 10**9))

    # Gone from the folder (a later rotation deleted it); last written between .2 and .1.
    assert successor(log, dev=0, ino=0, mtime_ns=1_500_000_000) == tmp_path / "app.log.1"
    assert successor(log, dev=0, ino=0, mtime_ns=9 * 10**9) is None


def _position_of(path: Path, offset: int) -> FilePosition:
    stat = path.stat()
    head = path.read_bytes()[:1024]
    return FilePosition(stat.st_dev, stat.st_ino, offset, fingerprint(head), len(head))


def test_same_file_needs_the_inode_and_the_first_bytes(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("2024-06-10T06:13:20Z first line\nsecond\n")
    position = _position_of(log, 10)
    assert position.same_file(log, log.stat())

    log.write_text("2024-06-11T00:00:00Z a new file at the same inode\n")  # truncated, rewritten
    assert not position.same_file(log, log.stat())


def test_a_copy_is_found_by_its_first_bytes(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("first\nsecond\nthird\n")
    position = _position_of(log, 6)
    copy = tmp_path / "app.log.1"
    copy.write_bytes(log.read_bytes())

    assert position.copied_to(copy, copy.stat())
    assert not position.copied_to(log, log.stat())  # the file itself is no copy
    assert not _position_of(log, 19).copied_to(copy, copy.stat())  # nothing unread in it
