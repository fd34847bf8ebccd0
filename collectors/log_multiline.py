"""Joins the lines of one multi-line record (a Python traceback, an NCCL error chain) into one.

A rule recognises the first line of a record and then judges each following line: part of
the record, perhaps part of it (a blank line between chained tracebacks counts only if the
chain goes on), or the end of it. The joined record keeps its newlines. A record that gets
no new line for `flush_after_s` is published as it is, so a crashed process's last traceback
is not held forever. Rules are chosen by name per file; the first whose start matches wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Verdict(Enum):
    TAKE = "take"  # the line belongs to the open record
    MAYBE = "maybe"  # it belongs only if a later line is taken
    END = "end"  # the record ended before this line


class Continuation(Protocol):
    """Judges the lines after a record's first line; it may keep state between them."""

    def accepts(self, line: str) -> Verdict: ...


class Rule(Protocol):
    """Recognises the first line of a multi-line record."""

    def begin(self, line: str) -> Continuation | None: ...


@dataclass(frozen=True, slots=True)
class Record:
    text: str  # the lines joined with "\n"
    start: int  # byte offset of its first line
    seen_at: float  # when its first line was read


# --- Python tracebacks -------------------------------------------------------------------------

_TRACEBACK = re.compile(
    r"(?P<prefix>.*?)(?P<group>  \+ Exception Group )?Traceback \(most recent call last\):\s*"
)
_CHAINED = {
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
}
# PyTorch's NCCL exceptions continue past their first line: the NCCL result's name and text,
# then "Last error:" and the failing call's message.
_NCCL_RESULT = re.compile(r"nccl[A-Z]\w*: ")


class _TracebackLines:
    """The lines after `Traceback (most recent call last):`, with the header's prefix kept.

    Launchers prefix every line of a process's output (torchrun: `[rank3]: `); a traceback
    goes on only through lines with the same prefix.
    """

    def __init__(self, prefix: str, group: bool) -> None:
        self.prefix = prefix
        self.state = "group" if group else "frames"

    def accepts(self, line: str) -> Verdict:
        if not line.startswith(self.prefix):
            return Verdict.END
        rest = line[len(self.prefix):]
        if not rest or rest.isspace():
            return Verdict.MAYBE
        indented = rest[0] in " \t"
        if self.state == "frames":  # frames are indented; the first line that is not is the error
            if not indented:
                self.state = "error"
            return Verdict.TAKE
        if self.state == "group":  # an exception group is drawn indented all the way down
            if indented:
                return Verdict.TAKE
            return self._chained(rest)
        if self.state == "chain":  # "During handling ...": the next traceback must follow
            header = _TRACEBACK.fullmatch(rest)
            if header is None or header.group("prefix"):
                return Verdict.END
            self.state = "group" if header.group("group") else "frames"
            return Verdict.TAKE
        if self.state == "last_error":
            self.state = "error"
            return Verdict.TAKE
        if _NCCL_RESULT.match(rest):
            return Verdict.TAKE
        if rest.rstrip() == "Last error:":
            self.state = "last_error"
            return Verdict.TAKE
        return self._chained(rest)

    def _chained(self, rest: str) -> Verdict:
        if rest.rstrip() in _CHAINED:
            self.state = "chain"
            return Verdict.TAKE
        return Verdict.END


class PythonTraceback:
    """`Traceback (most recent call last):` through the exception line, chains included."""

    def begin(self, line: str) -> Continuation | None:
        if "Traceback (most recent call last):" not in line:
            return None
        header = _TRACEBACK.fullmatch(line)
        if header is None:
            return None
        return _TracebackLines(header.group("prefix"), header.group("group") is not None)


# --- indented continuation lines ---------------------------------------------------------------

class _IndentedLines:
    def accepts(self, line: str) -> Verdict:
        if not line or line.isspace():
            return Verdict.MAYBE
        return Verdict.TAKE if line[0] in " \t" else Verdict.END


class Indented:
    """Any line starts a record; lines that start with a space or tab continue it."""

    _lines = _IndentedLines()

    def begin(self, line: str) -> Continuation | None:
        return self._lines


# --- NCCL error chains --------------------------------------------------------------------------

# `host:pid:tid [dev] file.cc:123 NCCL WARN <what failed>`, then one line per function the
# error returned through: `host:pid:tid [dev] NCCL INFO file.cc:456 -> <ncclResult_t>`.
_NCCL_WARN = re.compile(r"(?P<thread>\S+:\d+:\d+ \[\d+\]) (?:\S+ )?NCCL WARN ")
_NCCL_RETURN = re.compile(r"\S+:\d+ -> \d+")


class _NcclReturns:
    def __init__(self, thread: str) -> None:
        self.prefix = f"{thread} NCCL INFO "

    def accepts(self, line: str) -> Verdict:
        if line.startswith(self.prefix) and _NCCL_RETURN.match(line, len(self.prefix)):
            return Verdict.TAKE
        return Verdict.END


class NcclErrorChain:
    """An `NCCL WARN` line and the `NCCL INFO file:line -> code` returns of the same thread."""

    def begin(self, line: str) -> Continuation | None:
        if "NCCL WARN " not in line:
            return None
        warn = _NCCL_WARN.match(line)
        return _NcclReturns(warn.group("thread")) if warn is not None else None


RULES: dict[str, Callable[[], Rule]] = {
    "python": PythonTraceback,
    "indent": Indented,
    "nccl": NcclErrorChain,
}


def rules_named(names: Sequence[str]) -> list[Rule]:
    """The rules called `names`, in order; ValueError names any that does not exist."""
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise ValueError(f"unknown multi-line rule(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(RULES))}")
    return [RULES[n]() for n in names]


class Joiner:
    """Feeds one file's lines through its rules and hands back the records they complete."""

    def __init__(
        self, rules: Sequence[Rule], flush_after_s: float = 1.0, max_record_chars: int = 1 << 20,
    ) -> None:
        self.rules = list(rules)
        self.flush_after_s = flush_after_s
        self.max_record_chars = max_record_chars
        self._continuation: Continuation | None = None
        self._lines: list[str] = []
        self._maybe: list[str] = []
        self._chars = 0
        self._start = 0
        self._seen_at = 0.0
        self._last_at = 0.0

    @property
    def pending_start(self) -> int | None:
        """Offset of the open record's first line: nothing from there on has been handed out."""
        return self._start if self._continuation is not None else None

    def feed(self, lines: Iterable[tuple[int, str]], now: float) -> list[Record]:
        """Records completed by `lines` ((start offset, text) pairs); blank lines between
        records are dropped."""
        records: list[Record] = []
        for start, text in lines:
            if self._continuation is not None:
                verdict = self._continuation.accepts(text)
                if verdict is Verdict.TAKE:
                    self._take(text, now)
                    if self._chars > self.max_record_chars:
                        records.append(self._close())
                    continue
                if verdict is Verdict.MAYBE:
                    self._maybe.append(text)
                    self._last_at = now
                    continue
                records.append(self._close())
            if not text or text.isspace():
                continue
            for rule in self.rules:
                continuation = rule.begin(text)
                if continuation is not None:
                    self._open(continuation, start, text, now)
                    break
            else:
                records.append(Record(text, start, now))
        return records

    def flush_idle(self, now: float) -> list[Record]:
        """The open record, if no line has come for it in `flush_after_s`."""
        if self._continuation is not None and now - self._last_at >= self.flush_after_s:
            return [self._close()]
        return []

    def flush(self) -> list[Record]:
        """The open record, whatever its age (its file ended, or the collector stops)."""
        return [self._close()] if self._continuation is not None else []

    def _open(self, continuation: Continuation, start: int, text: str, now: float) -> None:
        self._continuation = continuation
        self._lines, self._maybe, self._chars = [text], [], len(text)
        self._start, self._seen_at, self._last_at = start, now, now

    def _take(self, text: str, now: float) -> None:
        if self._maybe:
            self._lines += self._maybe
            self._chars += sum(len(m) + 1 for m in self._maybe)
            self._maybe = []
        self._lines.append(text)
        self._chars += len(text) + 1
        self._last_at = now

    def _close(self) -> Record:
        record = Record("\n".join(self._lines), self._start, self._seen_at)
        self._continuation, self._lines, self._maybe = None, [], []
        return record
