"""`vigil diagnose metrics`: an anomaly score per timestamp of a CSV, learnt online.

The CSV has a timestamp column (its name contains "time", or the first column) and one or
more value columns. Rows are read in order; each value column has its own `RobustBaseline`,
which scores a value before learning it, so no row is judged with knowledge of later ones
and no labels are used. A row's score is its highest column score; its label is 1 when that
reaches 0.5. Empty cells are skipped; a cell that is not a number scores 1 (a broken
exporter writes text where a number belongs).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.diagnosis.baseline import RobustBaseline

LABEL_AT = 0.5


class MetricsFileError(ValueError):
    """The CSV cannot be read as timestamp + value columns; the message says where."""


@dataclass(frozen=True, slots=True)
class RowScore:
    timestamp: str
    score: float
    label: int
    column: str | None  # the column that scored highest, None when nothing scored

    def flat(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "score": round(self.score, 4), "label": self.label,
                "column": self.column}


def diagnose_metrics(path: Path, window: int = 256) -> Iterator[RowScore]:
    with path.open(newline="", encoding="utf-8", errors="replace") as source:
        reader = csv.reader(source)
        header = next(reader, None)
        if not header or len(header) < 2:
            raise MetricsFileError(f"{path}: needs a header with a timestamp column and at "
                                   "least one value column")
        time_at = next((i for i, name in enumerate(header) if "time" in name.lower()), 0)
        columns = [(i, name) for i, name in enumerate(header) if i != time_at]
        baselines = {i: RobustBaseline(window) for i, _ in columns}
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise MetricsFileError(f"{path}:{number}: {len(row)} cells, the header has "
                                       f"{len(header)}")
            best, best_column = 0.0, None
            for i, name in columns:
                cell = row[i].strip()
                if not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    value = float("nan")
                score = baselines[i].score(value)
                if score > best:
                    best, best_column = score, name
            yield RowScore(row[time_at], best, int(best >= LABEL_AT), best_column)
