"""How a log file is recognised after rotation: identity, fingerprint, and its rotated siblings.

A file is the same file when its device and inode match *and* its first bytes do: inodes are
reused as soon as a file is deleted, so an inode alone can point a restarted collector into
an unrelated file. Rotated siblings follow logrotate's names: `app.log.1`, `app.log.2`, ...
(larger is older) and, with `dateext`, `app.log-20240610` (earlier date is older).
Compressed siblings (`app.log.2.gz`) are other files with other bytes and are never matched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FINGERPRINT_BYTES = 1024  # enough to cover a first line's timestamp and message

_NUMBERED = re.compile(r"\.(\d+)")  # app.log.1
_DATED = re.compile(r"-(\d[\d_-]*)")  # app.log-20240610, app.log-20240610-1718000000


def fingerprint(head: bytes) -> str:
    """A short digest of a file's first bytes."""
    return hashlib.blake2b(head, digest_size=16).hexdigest()


def read_fingerprint(fd: int, length: int) -> tuple[str, int]:
    """The fingerprint of the first `length` bytes of an open file, and how many there were."""
    head = os.pread(fd, length, 0)
    return fingerprint(head), len(head)


def path_fingerprint(path: Path, length: int) -> str | None:
    """The fingerprint of the first `length` bytes at `path`; None if it is shorter or gone."""
    try:
        with path.open("rb") as f:
            head = f.read(length)
    except OSError:
        return None
    return fingerprint(head) if len(head) == length else None


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where reading stopped in one file, and enough about the file to find it again."""

    dev: int
    ino: int
    offset: int  # every byte before it has been published
    fingerprint: str  # of the file's first `fingerprint_bytes` bytes
    fingerprint_bytes: int

    def to_entry(self) -> dict[str, int | str]:
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset,
                "fingerprint": self.fingerprint, "fingerprint_bytes": self.fingerprint_bytes}

    @classmethod
    def from_entry(cls, entry: Mapping[str, object]) -> FilePosition:
        """Read a checkpoint entry back; ValueError names what is wrong with it."""
        numbers = {}
        for key in ("dev", "ino", "offset", "fingerprint_bytes"):
            value = entry.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key} must be a non-negative integer, not {value!r}")
            numbers[key] = value
        digest = entry.get("fingerprint")
        if not isinstance(digest, str):
            raise ValueError(f"fingerprint must be a string, not {digest!r}")
        return cls(dev=numbers["dev"], ino=numbers["ino"], offset=numbers["offset"],
                   fingerprint=digest, fingerprint_bytes=numbers["fingerprint_bytes"])

    def same_file(self, path: Path, stat: os.stat_result) -> bool:
        """Whether `path` (whose stat is given) is the file this position was taken in."""
        if (stat.st_dev, stat.st_ino) != (self.dev, self.ino) or stat.st_size < self.offset:
            return False
        return path_fingerprint(path, self.fingerprint_bytes) == self.fingerprint

    def copied_to(self, path: Path, stat: os.stat_result) -> bool:
        """Whether `path` is a copy of this file holding bytes past the offset (copytruncate)."""
        if (stat.st_dev, stat.st_ino) == (self.dev, self.ino) or stat.st_size <= self.offset:
            return False
        return path_fingerprint(path, self.fingerprint_bytes) == self.fingerprint


def rotation_chain(path: Path) -> list[tuple[Path, os.stat_result]]:
    """The rotated siblings of `path`, oldest first, then `path` itself if it exists."""
    numbered: list[tuple[int, Path, os.stat_result]] = []
    dated: list[tuple[str, Path, os.stat_result]] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        entries = []
    for entry in entries:
        if not entry.name.startswith(path.name) or entry.name == path.name:
            continue
        suffix = entry.name[len(path.name):]
        number, date = _NUMBERED.fullmatch(suffix), _DATED.fullmatch(suffix)
        if number is None and date is None:
            continue
        try:
            stat = entry.stat()
        except OSError:
            continue  # rotated away again while we looked
        if number is not None:
            numbered.append((int(number.group(1)), Path(entry.path), stat))
        elif date is not None:
            dated.append((date.group(1), Path(entry.path), stat))
    # With both naming styles in one folder (a changed logrotate config) the dated files are
    # taken as the older ones; logrotate itself never mixes them.
    chain = [(p, s) for _, p, s in sorted(dated, key=lambda t: t[0])]
    chain += [(p, s) for _, p, s in sorted(numbered, key=lambda t: -t[0])]
    with contextlib.suppress(OSError):  # not there (yet): only its siblings
        chain.append((path, path.stat()))
    return chain


def successor(path: Path, dev: int, ino: int, mtime_ns: int) -> Path | None:
    """The file written after the one with this identity: the next in rotation order.

    A file no longer in the folder (deleted by a later rotation, or replaced) is placed by its
    last modification time instead: the next file is the oldest one written no earlier.
    """
    chain = rotation_chain(path)
    for i, (_, stat) in enumerate(chain):
        if (stat.st_dev, stat.st_ino) == (dev, ino):
            return chain[i + 1][0] if i + 1 < len(chain) else None
    for candidate, stat in chain:
        if stat.st_mtime_ns >= mtime_ns:
            return candidate
    return None
