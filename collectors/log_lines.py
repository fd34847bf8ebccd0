"""Cuts a byte stream into text lines, refusing lines too long to hold and lines that are not text.

Log files and pipes are read in chunks, so one line may span many reads. A line longer than
`max_line_bytes` is never held whole: once its unfinished part passes the limit it is reported
and the rest of it is discarded chunk by chunk until its newline, so a 10 MB line costs no more
memory than a 1 MB one and the lines either side of it come through intact.
"""

from __future__ import annotations

from dataclasses import dataclass

# A line is binary junk, not text with a few bad bytes, when more than this share of its
# characters cannot be decoded: random bytes decode to roughly 40% replacement characters,
# while a text line with a stray Latin-1 name has a handful.
_MAX_UNDECODABLE_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that was skipped: where it starts in its stream, how long it was seen to be, why."""

    offset: int
    length: int
    reason: str


class NotText(ValueError):
    """The bytes of a line are binary data, not text; the message says what gave them away."""


def decode_line(raw: bytes, may_hold_nul: bool = True) -> str:
    """The line as text; bytes that are not UTF-8 become U+FFFD unless most of them are not.

    `may_hold_nul=False` skips the NUL search when the caller already knows there is none
    (one search over a whole chunk is much cheaper than one per line).
    """
    if may_hold_nul and b"\0" in raw:
        raise NotText("NUL bytes: binary data, not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
    if text.count("\ufffd") > _MAX_UNDECODABLE_SHARE * len(text):
        raise NotText("mostly invalid UTF-8: binary data, not text")
    return text


class LineSplitter:
    """Turns chunks of one stream into complete lines with the stream offset each starts at.

    `consumed` is the offset of the first byte not yet handed out as part of a complete line
    (or of a line being skipped): the position to resume from, since every byte before it has
    been dealt with.
    """

    def __init__(self, max_line_bytes: int, offset: int = 0) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, not {max_line_bytes}")
        self.max_line_bytes = max_line_bytes
        self.consumed = offset
        self._partial = b""
        self._discarding = False
        self._fed = offset  # offset just past the last byte fed

    @property
    def discarding(self) -> bool:
        """Whether the splitter is inside an over-long line, throwing its bytes away."""
        return self._discarding

    def feed(self, chunk: bytes) -> tuple[list[tuple[int, bytes]], list[Rejected]]:
        """The lines `chunk` completes, as (start offset, bytes without the newline)."""
        if self._discarding:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._fed += len(chunk)
                return [], []
            self._discarding = False
            self._fed += newline + 1
            self.consumed = self._fed
            chunk = chunk[newline + 1:]
        data = self._partial + chunk if self._partial else chunk
        parts = data.split(b"\n")
        partial = parts.pop()
        lines: list[tuple[int, bytes]] = []
        rejected: list[Rejected] = []
        start = self.consumed
        limit = self.max_line_bytes
        for raw in parts:
            if len(raw) > limit:
                rejected.append(Rejected(start, len(raw), self._too_long()))
            else:
                lines.append((start, raw))
            start += len(raw) + 1
        self.consumed = start
        self._fed = start + len(partial)
        if len(partial) > limit:
            # Report it now, not at its newline: that may be megabytes (or forever) away.
            rejected.append(Rejected(start, len(partial), self._too_long()))
            self._partial, self._discarding = b"", True
        else:
            self._partial = partial
        return lines, rejected

    def finish(self) -> tuple[int, bytes] | None:
        """The unterminated last line, once the stream is known to have ended; None if none."""
        partial, self._partial = self._partial, b""
        start = self.consumed
        self.consumed = self._fed
        if self._discarding:
            self._discarding = False
            return None
        return (start, partial) if partial else None

    def _too_long(self) -> str:
        return f"line longer than max_line_bytes ({self.max_line_bytes})"
