"""Follows one log path across rotations and truncations, reading lines from a known byte offset.

The file being read is held open, like `tail -F`: after a rotation by rename the rest of the
old file is read through the open handle before the next file is started, so nothing written
before the rename is lost. Writers keep appending to the renamed file until they reopen
(logrotate's postrotate signal), so the switch waits until the next file has data, proof
that the writer has moved on, or until the old file has been quiet for `rotate_wait_s`.

A file that shrinks or whose first bytes change was truncated in place (copytruncate). The
bytes written between the last read and the copy are in the copy, so the copy is found by
its first bytes and read from where reading stopped before the file itself is read again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vigil.collectors.log_lines import LineSplitter, NotText, Rejected, decode_line
from vigil.collectors.log_rotation import (
    FINGERPRINT_BYTES,
    FilePosition,
    read_fingerprint,
    rotation_chain,
    successor,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


@dataclass(slots=True)
class ReadResult:
    """What one `read()` found: lines as (start offset, text), blank ones included."""

    path: Path | None = None  # the file they were read from (a rotated name, a copy, ...)
    lines: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    file_ended: bool = False  # these are the last lines of their file; a new file follows
    more: bool = False  # stopped early (byte budget, or a file switch): call again


@dataclass(slots=True)
class _Open:
    """The file being read and where in it."""

    path: Path  # the name it was opened under; it may have been renamed since
    file: BinaryIO
    dev: int
    ino: int
    splitter: LineSplitter
    last_growth: float  # `now` when it last gave us bytes
    fingerprint: str = ""
    fingerprint_bytes: int = 0

    def refresh_fingerprint(self) -> None:
        if self.fingerprint_bytes < FINGERPRINT_BYTES or not self.fingerprint:
            self.fingerprint, self.fingerprint_bytes = read_fingerprint(
                self.file.fileno(), FINGERPRINT_BYTES)

    def position(self, offset: int) -> FilePosition:
        return FilePosition(self.dev, self.ino, offset, self.fingerprint, self.fingerprint_bytes)


class FileCursor:
    """One followed path: call `read()` each poll, `position()` after publishing what it gave."""

    def __init__(
        self, path: Path, max_line_bytes: int, from_start: bool, rotate_wait_s: float = 5.0,
        resume: FilePosition | None = None,
    ) -> None:
        self.path = path
        self.max_line_bytes = max_line_bytes
        self.rotate_wait_s = rotate_wait_s
        self._from_start = from_start
        self._open: _Open | None = None
        self._next: tuple[Path, int] | None = None  # what to open next, from which offset
        self._last_position = resume  # where the last closed file was left
        if resume is not None:
            self._next = self._resume_plan(resume)

    def read(self, now: float, max_bytes: int = 8 * CHUNK_BYTES) -> ReadResult:
        """New lines of the followed file, up to about `max_bytes` of it."""
        if self._open is None and not self._open_next(now):
            return ReadResult()
        assert self._open is not None
        opened = self._open
        try:
            stat: os.stat_result | None = self.path.stat()
        except FileNotFoundError:
            stat = None
        if stat is not None and (stat.st_dev, stat.st_ino) == (opened.dev, opened.ino):
            if self._truncated(opened, stat):
                return self._after_truncation(opened)
            return self._read_chunks(opened, now, max_bytes)
        return self._drain_rotated(opened, now, max_bytes)

    def position(self, pending_start: int | None = None) -> FilePosition | None:
        """Where a restart should begin: at `pending_start` if lines from there are unpublished."""
        if self._open is None:
            return self._last_position
        opened = self._open
        offset = opened.splitter.consumed if pending_start is None else pending_start
        return opened.position(offset)

    def close(self) -> None:
        if self._open is not None:
            self._open.file.close()
            self._open = None

    # --- opening ---------------------------------------------------------------------------

    def _resume_plan(self, resume: FilePosition) -> tuple[Path, int]:
        """Which file holds the checkpointed position now, and from where to read it."""
        chain = rotation_chain(self.path)
        for candidate, stat in chain:
            if resume.same_file(candidate, stat):
                return candidate, resume.offset
        # Not there as itself: truncated in place (copytruncate) or deleted while we were
        # stopped. A copy made before the truncation still holds the unread lines.
        for candidate, stat in reversed(chain):
            if resume.copied_to(candidate, stat):
                log.info("resuming from the copy of a truncated log",
                         extra={"path": str(self.path), "copy": str(candidate),
                                "offset": resume.offset})
                return candidate, resume.offset
        log.warning("checkpointed log file not found; reading the path from its start",
                    extra={"path": str(self.path), "offset": resume.offset})
        return self.path, 0

    def _open_next(self, now: float) -> bool:
        if self._next is not None:
            path, offset = self._next
        else:
            path, offset = self.path, 0 if self._from_start else -1
        try:
            file = path.open("rb", buffering=0)
        except FileNotFoundError:
            if path != self.path:
                self._next = None  # renamed again before we got to it: follow the path
            self._from_start = True  # when it appears, all of it is new
            return False
        stat = os.fstat(file.fileno())
        if offset < 0:
            offset = stat.st_size  # it was there before us: only new lines
        elif offset > stat.st_size:
            offset = 0  # shorter than where we were: not the bytes we had read
        file.seek(offset)
        self._next = None
        self._from_start = True  # any later file at this path is new from its first byte
        self._open = _Open(path, file, stat.st_dev, stat.st_ino,
                           LineSplitter(self.max_line_bytes, offset), last_growth=now)
        self._open.refresh_fingerprint()
        return True

    def _close_open(self, then: tuple[Path, int] | None) -> None:
        assert self._open is not None
        self._last_position = self._open.position(self._open.splitter.consumed)
        self.close()
        self._next = then

    # --- reading ---------------------------------------------------------------------------

    def _read_chunks(self, opened: _Open, now: float, max_bytes: int) -> ReadResult:
        result = ReadResult(opened.path)
        total = 0
        while total < max_bytes:
            chunk = opened.file.read(min(CHUNK_BYTES, max_bytes - total))
            if not chunk:
                break
            total += len(chunk)
            self._take(opened, chunk, result)
        if total:
            opened.last_growth = now
            opened.refresh_fingerprint()
        result.more = total >= max_bytes
        return result

    def _take(self, opened: _Open, chunk: bytes, result: ReadResult) -> None:
        lines, rejected = opened.splitter.feed(chunk)
        result.rejected += rejected
        may_hold_nul = b"\0" in chunk
        for start, raw in lines:
            _add_line(result, start, raw, may_hold_nul)

    def _drain_rotated(self, opened: _Open, now: float, max_bytes: int) -> ReadResult:
        """Read the rest of a file that is no longer at the path, then move to its successor."""
        stat = os.fstat(opened.file.fileno())
        after = successor(self.path, opened.dev, opened.ino, stat.st_mtime_ns)
        # Look at the successor before draining: if the writer had moved on by then, every
        # byte it will ever write to the old file is there when we read it to its end.
        moved_on = after is not None and _size(after) > 0
        result = self._read_chunks(opened, now, max_bytes)
        if result.more:
            return result
        if moved_on or now - opened.last_growth >= self.rotate_wait_s:
            last = opened.splitter.finish()  # a rotated file's unterminated line is complete
            if last is not None:
                _add_line(result, *last, may_hold_nul=True)
            self._close_open((after, 0) if after is not None else None)
            result.file_ended = result.more = True
        return result

    def _truncated(self, opened: _Open, stat: os.stat_result) -> bool:
        if stat.st_size < opened.file.tell():
            return True
        if not opened.fingerprint_bytes:
            return False
        head, _ = read_fingerprint(opened.file.fileno(), opened.fingerprint_bytes)
        return head != opened.fingerprint  # rewritten from the top past where we were

    def _after_truncation(self, opened: _Open) -> ReadResult:
        position = opened.position(opened.splitter.consumed)
        copy = next((candidate for candidate, stat in reversed(rotation_chain(self.path))
                     if position.copied_to(candidate, stat)), None)
        if copy is not None:
            log.info("log truncated; reading the rest of its copy first",
                     extra={"path": str(self.path), "copy": str(copy), "offset": position.offset})
            # The copy is complete; the file itself comes after it in the rotation chain.
            self._close_open((copy, position.offset))
        else:
            log.info("log truncated; reading it again from the start",
                     extra={"path": str(self.path), "offset": position.offset})
            self._close_open((self.path, 0))
        return ReadResult(file_ended=True, more=True)


def _add_line(result: ReadResult, start: int, raw: bytes, may_hold_nul: bool) -> None:
    try:
        text = decode_line(raw, may_hold_nul)
    except NotText as exc:
        result.rejected.append(Rejected(start, len(raw), str(exc)))
        return
    if text and text[-1] == "\r":  # CRLF line ends
        text = text[:-1]
    result.lines.append((start, text))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
