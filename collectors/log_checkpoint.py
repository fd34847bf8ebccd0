"""Read positions kept in a small JSON file, so a restarted collector neither loses nor repeats.

The file maps a key (a log path, a kernel log device, a journal selection) to a flat entry.
It is replaced atomically (write a temporary file, fsync it, rename it over the old one), so
a crash leaves either the old document or the new one, never half of each. Writes are
throttled: a collector saves at most every `min_interval_s`, and on shutdown. A hard crash
therefore repeats at most that interval's lines; it never loses one, because a position is
recorded only after the lines before it were handed to the publisher.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

Entry = Mapping[str, int | str]


class CheckpointFile:
    """A JSON document of positions, loaded once and saved when due."""

    def __init__(self, path: Path, min_interval_s: float = 1.0) -> None:
        self.path = path
        self.min_interval_s = min_interval_s
        self._entries: dict[str, dict[str, int | str]] = {}
        self._dirty = False
        self._saved_at = float("-inf")
        self.load_error: str | None = None  # why the file on disk could not be used
        self._load()

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def put(self, key: str, entry: Entry) -> None:
        """Record a position in memory; it reaches the disk at the next due `save`."""
        if self._entries.get(key) != entry:
            self._entries[key] = dict(entry)
            self._dirty = True

    def save_if_due(self) -> bool:
        """Save if something changed and the last save is at least `min_interval_s` old."""
        if self._dirty and time.monotonic() - self._saved_at >= self.min_interval_s:
            self.save()
            return True
        return False

    def save(self) -> None:
        """Write the document now if anything changed (shutdown calls this)."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w") as f:
            json.dump({"version": 1, "positions": self._entries}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
        _fsync_folder(self.path.parent)  # make the rename itself survive a power cut
        self._dirty = False
        self._saved_at = time.monotonic()

    def save_on_exit(self) -> None:
        """`save`, for shutdown: a failure is logged, not raised, so the rest still stops."""
        try:
            self.save()
        except OSError as exc:
            log.error("checkpoint not saved", extra={"path": str(self.path), "error": exc})

    def _load(self) -> None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            document = json.loads(text)
            positions = document["positions"]
            if not isinstance(positions, dict) or not all(
                isinstance(v, dict) for v in positions.values()
            ):
                raise ValueError("positions must map keys to objects")
        except (ValueError, KeyError, TypeError) as exc:
            # Starting over is better than not starting: the file is rewritten at next save.
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.warning("unreadable checkpoint ignored",
                        extra={"path": str(self.path), "error": self.load_error})
            return
        self._entries = positions


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
