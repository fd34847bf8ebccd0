"""The library's log signals compiled once, matched with a literal prefilter.

Rules are grouped by their `contains` literal: one substring test skips every rule of a
group for a line that lacks it, so hundreds of patterns cost a few dozen `in` tests a line.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

from vigil.diagnosis.library import FaultLibrary, FaultMode, LogSignal


class LogMatcher:
    def __init__(self, library: FaultLibrary) -> None:
        groups: dict[str, list[tuple[LogSignal, FaultMode]]] = defaultdict(list)
        for mode in library:
            for signal in mode.signals.logs:
                groups[signal.contains].append((signal, mode))
        self._groups = list(groups.items())

    def matches(self, text: str) -> Iterator[tuple[FaultMode, re.Match[str]]]:
        """Every (mode, match) of `text`, in library order within each literal's group."""
        for literal, rules in self._groups:
            if literal not in text:
                continue
            for signal, mode in rules:
                match = signal.regex.search(text)
                if match is not None:
                    yield mode, match
