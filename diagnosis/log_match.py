"""The library's log signals compiled once, matched with a literal prefilter.

Rules are grouped by their `contains` literal, and all literals go into one Aho-Corasick
automaton (pyahocorasick): a single pass over a line finds every literal it holds, however
many the library has, and only those groups run their regexes. Most lines hold none and cost
that one pass.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator, Sequence
from itertools import accumulate

import ahocorasick
from vigil.diagnosis.library import EXAMPLE_VALUES, FaultLibrary, FaultMode, LogSignal

# A line's shape: its digits all made 0. Most log lines differ from an earlier one only in
# numbers (steps, times, addresses), so which literals a shape may hold is worked out once.
# Shapes are made as bytes: bytes.translate is a table lookup per byte, ten times faster than
# str.translate, and a UTF-8 multi-byte character never holds an ASCII digit byte.
_SHAPE = bytes.maketrans(b"123456789", b"000000000")
_SHAPES_REMEMBERED = 65_536


class LogMatcher:
    def __init__(self, library: FaultLibrary) -> None:
        groups: dict[str, list[tuple[LogSignal, FaultMode]]] = defaultdict(list)
        for mode in library:
            for signal in mode.signals.logs:
                groups[signal.contains].append((signal, mode))
        self._groups = list(groups.items())
        self._automaton = ahocorasick.Automaton()
        by_shape: dict[str, list[int]] = defaultdict(list)
        for order, literal in enumerate(groups):
            self._automaton.add_word(literal, order)
            by_shape[_shape(literal)].append(order)
        self._shape_automaton = ahocorasick.Automaton()
        for shape, orders in by_shape.items():
            self._shape_automaton.add_word(shape, tuple(orders))
        if groups:
            self._automaton.make_automaton()
            self._shape_automaton.make_automaton()
        self._shapes: dict[bytes, tuple[int, ...]] = {}  # line shape -> literals it may hold

    def matches(self, text: str) -> Iterator[tuple[FaultMode, re.Match[str]]]:
        """Every (mode, match) of `text`, in library order within each literal's group."""
        if not self._groups:
            return
        found = {order for _, order in self._automaton.iter(text)}
        for order in sorted(found):
            for signal, mode in self._groups[order][1]:
                match = signal.regex.search(text)
                if match is not None:
                    yield mode, match

    def scan(self, texts: Sequence[str]) -> Iterator[tuple[int, FaultMode, re.Match[str]]]:
        """(index, mode, match) for every match in a batch of texts, in index order.

        The same as `matches` on each text, at a fraction of the cost: each line is reduced
        to its shape (digits made 0), and only shapes not seen before go through the
        automaton, all in one pass over them joined. A literal in a line is also in its
        shape, so a shape's literals are candidates, confirmed in the line itself.
        """
        if not self._groups or not texts:
            return
        if len(self._shapes) > _SHAPES_REMEMBERED:
            self._shapes.clear()
        shapes = "\n".join(texts).encode("utf-8", "surrogatepass").translate(_SHAPE).split(b"\n")
        if len(shapes) != len(texts):  # some text holds a newline of its own
            shapes = [text.encode("utf-8", "surrogatepass").translate(_SHAPE) for text in texts]
        known = self._shapes
        new = [shape for shape in dict.fromkeys(shapes) if shape not in known]
        if new:
            self._learn(new)
        for index, candidates in enumerate(map(known.__getitem__, shapes)):
            if not candidates:
                continue
            text = texts[index]
            for order in candidates:
                literal, rules = self._groups[order]
                if literal not in text:
                    continue
                for signal, mode in rules:
                    match = signal.regex.search(text)
                    if match is not None:
                        yield index, mode, match

    def _learn(self, shapes: list[bytes]) -> None:
        """Which literals each new shape may hold: one automaton pass over them all.

        Literals never hold a newline (`LogSignal` checks it), so none spans two shapes.
        """
        texts = [shape.decode("utf-8", "surrogatepass") for shape in shapes]
        joined = "\n".join(texts)
        ends = list(accumulate(len(text) + 1 for text in texts))  # one past each end
        found: dict[int, set[int]] = defaultdict(set)
        for at, orders in self._shape_automaton.iter(joined):
            found[bisect_right(ends, at)].update(orders)
        for index, shape in enumerate(shapes):
            self._shapes[shape] = tuple(sorted(found.get(index, ())))


def _shape(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").translate(_SHAPE).decode("utf-8", "surrogatepass")


def consistency_problems(library: FaultLibrary) -> list[str]:
    """Examples that do not raise their own mode alone, near misses that raise theirs."""
    matcher = LogMatcher(library)

    def raised(line: str) -> list[str]:
        return list(dict.fromkeys(mode.id for mode, _ in matcher.matches(line)))

    problems = []
    for mode in library:
        if mode.example is not None:
            got = raised(mode.example.format(**EXAMPLE_VALUES))
            if got != [mode.id]:
                problems.append(f"{mode.id}: its example raises {got or 'nothing'}")
        for near in mode.near_miss:
            if mode.id in raised(near.format(**EXAMPLE_VALUES)):
                problems.append(f"{mode.id}: near miss {near!r} raises it")
    return problems
