"""Robust baselines and `vigil diagnose metrics`: scores learnt online, no labels used."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vigil.diagnosis.baseline import WARMUP, RobustBaseline
from vigil.diagnosis.offline_metrics import MetricsFileError, diagnose_metrics
from vigil.ui.cli import app


def write_csv(path: Path, rows: int = 600) -> Path:
    """GPU temperature with a 20-row level shift at 400, step time with one spike at 250."""
    rng = random.Random(3)
    lines = ["timestamp,gpu_temp,step_time"]
    for i in range(rows):
        temp = 60 + rng.gauss(0, 0.8) + (25 if 400 <= i < 420 else 0)
        step = 1.2 + rng.gauss(0, 0.02) + (0.9 if i == 250 else 0)
        lines.append(f"{1718000000 + i * 10},{temp:.2f},{step:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_anomalous_rows_and_only_they_are_labelled(tmp_path: Path) -> None:
    rows = list(diagnose_metrics(write_csv(tmp_path / "m.csv")))
    flagged = [i for i, row in enumerate(rows) if row.label]
    assert flagged == [250, *range(400, 420)]
    assert rows[250].column == "step_time" and rows[405].column == "gpu_temp"
    assert all(0.0 <= row.score < 1.0 for row in rows)
    assert max(row.score for i, row in enumerate(rows) if i not in flagged) < 0.5


def test_nothing_scores_before_the_warmup() -> None:
    baseline = RobustBaseline()
    assert [baseline.score(1000.0 * (i % 2)) for i in range(WARMUP)] == [0.0] * WARMUP


def test_a_flat_series_still_notices_a_change() -> None:
    baseline = RobustBaseline()
    for _ in range(100):
        baseline.score(5.0)
    assert baseline.score(5.0) == 0.0
    assert baseline.score(6.0) > 0.99


def test_text_where_a_number_belongs_scores_one(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", rows=100)
    lines = path.read_text().splitlines()
    lines[60] = lines[60].split(",")[0] + ",NaN,1.2"
    lines[61] = lines[61].split(",")[0] + ",,1.2"  # empty cells are skipped
    path.write_text("\n".join(lines) + "\n")
    rows = list(diagnose_metrics(path))
    assert (rows[59].label, rows[59].column) == (1, "gpu_temp")  # lines[0] is the header
    assert rows[60].label == 0


def test_a_malformed_file_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,a\n1,2\n3\n")
    with pytest.raises(MetricsFileError, match=r"bad\.csv:3: 1 cells"):
        list(diagnose_metrics(bad))
    header_only = tmp_path / "one.csv"
    header_only.write_text("timestamp\n")
    with pytest.raises(MetricsFileError, match="needs a header"):
        list(diagnose_metrics(header_only))


def test_cli_prints_a_row_per_timestamp(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", rows=300)
    result = CliRunner().invoke(app, ["diagnose", "metrics", str(path), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 300 and set(rows[0]) == {"timestamp", "score", "label", "column"}
    assert [r["timestamp"] for r in rows if r["label"]] == ["1718002500"]
