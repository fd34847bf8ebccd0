"""Log files the simulated hosts write, in the formats real systems use, rotated by size."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

KERNEL, TRAINING, SCHEDULER = "kernel", "training", "scheduler"
_FILES = {KERNEL: "kern.log", TRAINING: "train.log", SCHEDULER: "slurmctld.log"}


class LogWriter:
    """Appends lines to `<root>/<host>/<file>`; rotates a file to `.1` past `max_bytes`."""

    def __init__(self, root: Path, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._open: dict[Path, TextIO] = {}
        self.written = 0  # lines written so far; `since(mark)` returns the newer ones
        self._recent: list[str] = []

    def path(self, host: str, source: str) -> Path:
        return self.root / host / _FILES[source]

    def touch(self, host: str, source: str) -> Path:
        path = self.path(host, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return path

    def write(self, host: str, source: str, now: float, message: str) -> str:
        """Write one line as `source` formats it; return the line."""
        line = format_line(source, host, now, message)
        path = self.path(host, source)
        f = self._open.get(path)
        if f is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._open[path] = path.open("a", buffering=1)
        f.write(line + "\n")
        self.written += 1
        self._recent.append(line)
        del self._recent[:-64]  # only the last few are ever asked for
        if f.tell() > self.max_bytes:
            f.close()
            os.replace(path, path.with_name(path.name + ".1"))
            del self._open[path]
        return line

    def since(self, mark: int) -> list[str]:
        """The lines written after `written` was `mark` (at most the last 64)."""
        return self._recent[len(self._recent) - min(self.written - mark, len(self._recent)):]

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def format_line(source: str, host: str, now: float, message: str) -> str:
    stamp = datetime.fromtimestamp(now, tz=UTC)
    if source == KERNEL:  # journalctl -k -o short-iso-precise
        return f"{stamp.strftime('%Y-%m-%dT%H:%M:%S.%f+00:00')} {host} kernel: {message}"
    if source == SCHEDULER:  # slurmctld.log: [2026-11-22T01:00:00.123] error: ...
        return f"[{stamp.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}] {message}"
    # training frameworks log ISO time, level and rank; ours carries the offset explicitly
    return f"{stamp.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z {message}"
