"""`vigil diagnose logs`: the library's rules and log-template mining, over plain files.

Two passes over the files. The first mines templates with Drain3 (numbers, addresses and
hex masked first, so ``conn 12 to 10.0.0.7`` and ``conn 9 to 10.0.0.8`` share one); the
second reports, line by line, every line a fault mode's log signal matches, and every line
whose template is rare in these files — what a log has said only a handful of times among
thousands of lines is what people grep for first. A rare line's score grows as its template
gets rarer: ``1 - log(count) / log(lines)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_match import LogMatcher
from vigil.diagnosis.log_templates import template_miner

SEVERITY_SCORE: Final = {"critical": 1.0, "warning": 0.8, "info": 0.5}
# A template seen at most this share of the lines (and at least once) is rare.
RARE_SHARE: Final = 0.001
MIN_LINES_FOR_RARITY: Final = 200  # below this, "rare" means nothing
_ISO: Final = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)")
_SYSLOG: Final = re.compile(r"^([A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d)\b")


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    line: int
    timestamp: float | None
    fault_id: str | None  # a library mode, or None for an anomaly
    anomaly: str | None  # "rare_template", or None for a fault mode
    score: float
    template: str
    text: str

    def flat(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "timestamp": self.timestamp,
                "fault_id": self.fault_id, "anomaly": self.anomaly,
                "score": round(self.score, 3), "template": self.template,
                "text": self.text[:1000]}


def diagnose_logs(files: Iterable[Path], library: FaultLibrary,
                  year: int | None = None) -> Iterator[Finding]:
    """Findings in file then line order (see the module docstring). `year` dates syslog
    timestamps, which carry none (default: this year)."""
    paths = list(files)
    miner = template_miner()
    counts: dict[int, int] = {}
    total = 0
    for _, _, text in _lines(paths):
        cluster = miner.add_log_message(text)["cluster_id"]
        counts[cluster] = counts.get(cluster, 0) + 1
        total += 1
    matcher = LogMatcher(library)
    rare_at = max(1, int(total * RARE_SHARE)) if total >= MIN_LINES_FOR_RARITY else 0
    this_year = year or datetime.now(UTC).year
    for path, number, text in _lines(paths):
        cluster = miner.match(text)
        template = cluster.get_template() if cluster is not None else text
        when = line_timestamp(text, this_year)
        matched = False
        for mode, _ in matcher.matches(text):
            matched = True
            yield Finding(str(path), number, when, mode.id, None,
                          SEVERITY_SCORE[str(mode.severity)], template, text)
        count = counts.get(cluster.cluster_id, 0) if cluster is not None else 0
        if not matched and 0 < count <= rare_at:
            score = 1.0 - math.log(count) / math.log(total)
            yield Finding(str(path), number, when, None, "rare_template", score, template, text)


def line_timestamp(text: str, year: int) -> float | None:
    """Unix time of a line's leading ISO 8601 or syslog timestamp; a time without a zone is
    taken as UTC."""
    head = text[:64]
    if (iso := _ISO.search(head)) is not None:
        stamp = iso.group(1).replace(",", ".").replace(" ", "T", 1).replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if (syslog := _SYSLOG.match(head)) is not None:
        try:
            moment = datetime.strptime(f"{year} {syslog.group(1)}", "%Y %b %d %H:%M:%S")
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC).timestamp()
    return None


def _lines(paths: list[Path]) -> Iterator[tuple[Path, int, str]]:
    for path in paths:
        with path.open("r", encoding="utf-8", errors="replace") as source:
            for number, raw in enumerate(source, start=1):
                text = raw.rstrip("\r\n")
                if text.strip():
                    yield path, number, text

