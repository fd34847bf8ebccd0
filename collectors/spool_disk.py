"""The spool's disk store: append-only segment files of length-prefixed, CRC-checked messages.

Messages that Kafka has not acknowledged wait here, oldest first, until they are replayed.
A directory holds numbered segment files; records are appended to the newest and read from
the oldest; a segment is deleted once every record in it is acknowledged. The store is
bounded by bytes: to make room it deletes the oldest segment and reports how many
unacknowledged messages went with it.

A process crash loses nothing already appended: writes go straight to the operating system.
Segments are fsynced when they are closed, so a machine crash can lose only the newest
segment's unsynced tail. A record torn mid-write fails its length or CRC check when the
directory is opened and is cut off, with what follows it in that segment, and a log line.
One store is driven by one thread; a lock file keeps a second process out of the directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from vigil.collectors.spool_record import Message, decode_payload, encode_frame, read_frame

log = logging.getLogger(__name__)

_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
# Segments put in front of the oldest one count down from here, so the names keep sorting.
_FIRST_ORDINAL = 10**12
_WRITE_CHUNK = 256 * 1024  # frames gathered before one write() to the operating system

# Where a message is in the spool: (segment ordinal, index of the record in the segment).
SpoolPosition = tuple[int, int]


class Discard(StrEnum):
    """Why the store gave up messages it held."""

    FULL = "full"  # the oldest segment was deleted to stay within max_bytes
    CORRUPT = "corrupt"  # a record failed its length or CRC check


# Called with why and how many unacknowledged messages the store gave up.
DiscardHook = Callable[[Discard, int], None]


class SpoolError(RuntimeError):
    """The spool directory cannot be used, or a write failed.

    `stored` says how many of the messages handed to `append` were stored before the
    failure; the rest were not written at all.
    """

    def __init__(self, message: str, stored: int = 0) -> None:
        super().__init__(message)
        self.stored = stored


@dataclass(eq=False)
class _Segment:
    ordinal: int
    path: Path
    count: int = 0  # records written
    size: int = 0  # bytes written
    done: int = 0  # records from the start that are acknowledged (or given up)
    acked: set[int] = field(default_factory=set)  # acknowledged records past `done`

    @property
    def pending(self) -> int:
        return self.count - self.done - len(self.acked)

    def settle(self, index: int) -> bool:
        """Mark one record acknowledged; False if it already was."""
        if index < self.done or index in self.acked or index >= self.count:
            return False
        if index == self.done:
            self.done += 1
            while self.done in self.acked:
                self.acked.discard(self.done)
                self.done += 1
        else:
            self.acked.add(index)
        return True


class DiskSpool:
    """Segment files under `directory`, at most `max_bytes` in all, read and acked in order.

    `read()` hands out unacknowledged records oldest first, each with its position;
    `ack(position)` settles one; `rewind()` starts reading again at the oldest unsettled
    record (after a failed send), skipping those acknowledged meanwhile.
    """

    def __init__(
        self, directory: Path, max_bytes: int, segment_bytes: int,
        on_discard: DiscardHook | None = None,
    ) -> None:
        if segment_bytes <= 0 or max_bytes < 2 * segment_bytes:
            raise ValueError(f"the spool needs max_bytes ({max_bytes}) of at least two "
                             f"segments ({segment_bytes} bytes each)")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._on_discard = on_discard or (lambda why, count: None)
        self._segments: list[_Segment] = []
        self._by_ordinal: dict[int, _Segment] = {}
        self._bytes = 0
        self._pending = 0
        self._writer: int | None = None  # fd of the newest segment, opened for appending
        self._chunk = bytearray()
        self._chunk_count = 0
        self._cursor: tuple[int, int, int] = (0, 0, 0)  # ordinal, record index, byte offset
        self._reader: tuple[int, BinaryIO] | None = None
        self._lowest = _FIRST_ORDINAL  # segment numbers used so far lie in [lowest, highest]
        self._highest = _FIRST_ORDINAL - 1
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock = (directory / "lock").open("ab")
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {directory}: {exc}") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolError(f"spool directory {directory} is in use by another process") from None
        self._load()

    @property
    def messages(self) -> int:
        """Unacknowledged messages on disk."""
        return self._pending

    @property
    def bytes(self) -> int:
        """Bytes the segment files take."""
        return self._bytes

    def append(self, messages: Sequence[Message]) -> None:
        """Write `messages` after everything already here, deleting the oldest if full."""
        stored = 0
        try:
            for message in messages:
                frame = encode_frame(message)
                if len(frame) > self.max_bytes - self.segment_bytes:
                    stored += self._write_chunk()
                    log.error("message too large for the spool; dropped",
                              extra={"topic": message.topic, "bytes": len(frame)})
                    self._on_discard(Discard.FULL, 1)
                    stored += 1
                    continue
                if not self._fits(len(frame)):
                    stored += self._write_chunk()
                    self._make_room(len(frame))
                    self._open_tail(len(frame))
                self._chunk += frame
                self._chunk_count += 1
            stored += self._write_chunk()
        except SpoolError as exc:
            exc.stored = stored
            raise

    def prepend(self, messages: Sequence[Message]) -> None:
        """Put `messages` in front of everything here, in a segment of their own.

        For messages older than the whole spool that were sent from memory and not
        acknowledged. Only call it with nothing from the spool in flight: reading starts
        again at the oldest record.
        """
        frames = b"".join(encode_frame(m) for m in messages)
        if not frames:
            return
        self._lowest -= 1
        ordinal = self._lowest
        if ordinal < 0:
            raise SpoolError(f"spool directory {self.directory} ran out of segment numbers")
        path = self.directory / f"{ordinal:020d}.seg"
        temporary = path.with_suffix(".tmp")
        try:
            with temporary.open("wb") as out:
                out.write(frames)
                out.flush()
                os.fsync(out.fileno())
            temporary.rename(path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise SpoolError(f"cannot write spool segment {path}: {exc}") from exc
        segment = _Segment(ordinal, path, count=len(messages), size=len(frames))
        self._segments.insert(0, segment)
        self._by_ordinal[ordinal] = segment
        self._bytes += segment.size
        self._pending += segment.count
        while self._bytes > self.max_bytes and len(self._segments) > 1:
            self._drop(self._segments[0])
        self.rewind()

    def read(self, max_messages: int, max_bytes: int) -> list[tuple[SpoolPosition, Message]]:
        """Up to `max_messages` unacknowledged records after the last one read (at least one,
        if any is left, however large), stopping once `max_bytes` are gathered."""
        out: list[tuple[SpoolPosition, Message]] = []
        gathered = 0
        while len(out) < max_messages and gathered < max_bytes:
            segment = self._cursor_segment()
            if segment is None:
                break
            ordinal, index, offset = self._cursor
            if index >= segment.count:
                if segment is self._segments[-1]:
                    break
                self._cursor = (ordinal + 1, 0, 0)
                continue
            try:
                source = self._open_reader(segment, offset)
            except OSError:  # the file went away under us
                self._give_up_rest(segment, index, offset)
                continue
            payload = read_frame(source, segment.size - offset)
            if payload is None:
                self._give_up_rest(segment, index, offset)
                continue
            self._cursor = (ordinal, index + 1, source.tell())
            if index < segment.done or index in segment.acked:
                continue
            message = decode_payload(payload)
            out.append(((ordinal, index), message))
            gathered += message.size
        return out

    def ack(self, position: SpoolPosition) -> bool:
        """Settle the record at `position`; False if it was settled or given up before."""
        ordinal, index = position
        segment = self._by_ordinal.get(ordinal)
        if segment is None or not segment.settle(index):
            return False
        self._pending -= 1
        if segment.pending == 0:
            self._delete(segment)
        return True

    def rewind(self) -> None:
        """Read again from the oldest unsettled record (records read but not acked return)."""
        self._close_reader()
        self._cursor = (self._segments[0].ordinal, 0, 0) if self._segments else (0, 0, 0)

    def close(self) -> None:
        """Fsync the newest segment and release the directory."""
        try:
            self._close_writer()
        finally:
            self._close_reader()
            self._lock.close()

    def _load(self) -> None:
        for path in self.directory.glob("*.tmp"):
            path.unlink()  # a prepend that did not finish; its messages are still in memory
        found = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                       if (m := _SEGMENT_NAME.match(p.name)))
        for ordinal, path in found:
            count, good = _scan(path)
            size = path.stat().st_size
            if good < size:
                log.warning("torn record at the end of a spool segment; cut off",
                            extra={"path": str(path), "offset": good, "bytes": size - good})
                os.truncate(path, good)
                self._on_discard(Discard.CORRUPT, 1)
            if count == 0:
                path.unlink()
                continue
            segment = _Segment(ordinal, path, count=count, size=good)
            self._segments.append(segment)
            self._by_ordinal[ordinal] = segment
            self._bytes += good
            self._pending += count
        if self._segments:
            self._lowest = min(self._lowest, self._segments[0].ordinal)
            self._highest = max(self._highest, self._segments[-1].ordinal)
            log.info("spool found on disk; it is replayed first",
                     extra={"directory": str(self.directory), "messages": self._pending,
                            "bytes": self._bytes})
        self.rewind()

    def _fits(self, frame_bytes: int) -> bool:
        """Whether a frame can join the gathered ones without a write, a roll or a drop."""
        if self._writer is None or len(self._chunk) >= _WRITE_CHUNK:
            return False
        needed = len(self._chunk) + frame_bytes
        tail = self._segments[-1]
        first_in_segment = tail.count + self._chunk_count == 0  # one frame may exceed a segment
        return (self._bytes + needed <= self.max_bytes
                and (tail.size + needed <= self.segment_bytes or first_in_segment))

    def _open_tail(self, frame_bytes: int) -> None:
        """Make sure the newest segment is open for appending and has room for a frame."""
        tail = self._segments[-1] if self._segments else None
        if tail is not None and (tail.count == 0 or tail.size + frame_bytes <= self.segment_bytes):
            if self._writer is None:
                self._writer = self._open_for_append(tail.path)
            return
        self._close_writer()
        # Never reuse a number: a cursor or an in-flight position may still name an old one.
        self._highest += 1
        segment = _Segment(self._highest, self.directory / f"{self._highest:020d}.seg")
        self._writer = self._open_for_append(segment.path)
        self._segments.append(segment)
        self._by_ordinal[segment.ordinal] = segment

    @staticmethod
    def _open_for_append(path: Path) -> int:
        try:
            return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot open spool segment {path}: {exc}") from exc

    def _write_chunk(self) -> int:
        """Write the gathered frames to the newest segment; return how many were written."""
        if not self._chunk or self._writer is None:
            return 0
        tail = self._segments[-1]
        failure: OSError | None = None
        with memoryview(self._chunk) as view:
            done = 0
            try:
                while done < len(view):
                    done += os.write(self._writer, view[done:])
            except OSError as exc:
                failure = exc
        if failure is not None:
            try:
                os.ftruncate(self._writer, tail.size)  # no half-written record stays behind
            except OSError:
                log.exception("cannot cut a failed write off a spool segment",
                              extra={"path": str(tail.path)})
            self._chunk.clear()  # the caller keeps these; SpoolError.stored says which
            self._chunk_count = 0
            raise SpoolError(f"cannot write spool segment {tail.path}: {failure}") from failure
        written = self._chunk_count
        tail.size += len(self._chunk)
        tail.count += written
        self._bytes += len(self._chunk)
        self._pending += written
        self._chunk.clear()
        self._chunk_count = 0
        return written

    def _make_room(self, frame_bytes: int) -> None:
        while self._segments and self._bytes + frame_bytes > self.max_bytes:
            self._drop(self._segments[0])

    def _drop(self, segment: _Segment) -> None:
        lost = segment.pending
        log.warning("spool full; dropped its oldest segment",
                    extra={"path": str(segment.path), "messages": lost, "bytes": segment.size})
        self._pending -= lost
        self._delete(segment)
        if lost:
            self._on_discard(Discard.FULL, lost)

    def _delete(self, segment: _Segment) -> None:
        if segment is self._segments[-1]:
            self._close_writer(sync=False)
        if self._reader is not None and self._reader[0] == segment.ordinal:
            self._close_reader()
        self._segments.remove(segment)
        del self._by_ordinal[segment.ordinal]
        self._bytes -= segment.size
        segment.path.unlink(missing_ok=True)

    def _give_up_rest(self, segment: _Segment, index: int, offset: int) -> None:
        """A record that was whole when written no longer reads back: skip the segment's rest.

        The segment was checked when opened, so this takes damage from outside the store.
        """
        lost = sum(segment.settle(i) for i in range(index, segment.count))
        log.error("unreadable record in a spool segment; skipped the rest of it",
                  extra={"path": str(segment.path), "offset": offset, "messages": lost})
        self._pending -= lost
        self._cursor = (segment.ordinal + 1, 0, 0)
        if segment.pending == 0:
            self._delete(segment)
        if lost:
            self._on_discard(Discard.CORRUPT, lost)

    def _cursor_segment(self) -> _Segment | None:
        """The segment the cursor is in, moving it on past segments deleted meanwhile."""
        ordinal, _, _ = self._cursor
        segment = self._by_ordinal.get(ordinal)
        if segment is None:
            later = [s for s in self._segments if s.ordinal > ordinal]
            if not later:
                return None
            segment = later[0]
            self._cursor = (segment.ordinal, 0, 0)
        return segment

    def _open_reader(self, segment: _Segment, offset: int) -> BinaryIO:
        if self._reader is None or self._reader[0] != segment.ordinal:
            self._close_reader()
            self._reader = (segment.ordinal, segment.path.open("rb"))
        source = self._reader[1]
        if source.tell() != offset:
            source.seek(offset)
        return source

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    def _close_writer(self, sync: bool = True) -> None:
        if self._writer is not None:
            try:
                if sync:
                    os.fsync(self._writer)
            finally:
                os.close(self._writer)
                self._writer = None


def _scan(path: Path) -> tuple[int, int]:
    """How many whole, CRC-valid records the segment starts with, and the bytes they take."""
    count = good = 0
    size = path.stat().st_size
    with path.open("rb") as source:
        while read_frame(source, size - good) is not None:
            count += 1
            good = source.tell()
    return count, good
