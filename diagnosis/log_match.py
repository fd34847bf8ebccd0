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


class LogMatcher:
    def __init__(self, library: FaultLibrary) -> None:
        groups: dict[str, list[tuple[LogSignal, FaultMode]]] = defaultdict(list)
        for mode in library:
            for signal in mode.signals.logs:
                groups[signal.contains].append((signal, mode))
        self._groups = list(groups.items())
        self._automaton = ahocorasick.Automaton()
        for order, literal in enumerate(groups):
            self._automaton.add_word(literal, order)
        if groups:
            self._automaton.make_automaton()

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

        The batch is joined and the automaton runs once over all of it, so a line that holds
        no literal costs no Python at all; only lines with a literal run their regexes.
        Literals never hold a newline (`LogSignal` checks it), so none spans two lines.
        """
        if not self._groups or not texts:
            return
        joined = "\n".join(texts)
        ends = list(accumulate(len(text) + 1 for text in texts))  # one past each line's end
        found: dict[int, set[int]] = {}
        for at, order in self._automaton.iter(joined):
            found.setdefault(bisect_right(ends, at), set()).add(order)
        for index in sorted(found):
            text = texts[index]
            for order in sorted(found[index]):
                for signal, mode in self._groups[order][1]:
                    match = signal.regex.search(text)
                    if match is not None:
                        yield index, mode, match


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
