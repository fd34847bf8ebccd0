"""Offline log diagnosis: rule findings, rare templates, timestamps, over real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.offline_logs import diagnose_logs, line_timestamp
from vigil.ui.cli import app

XID = "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus."


def write_log(path: Path, lines: int, extra: dict[int, str]) -> Path:
    """`lines` lines of a steady training log, with `extra` lines inserted after some."""
    out = []
    for i in range(lines):
        out.append(f"2024-06-10T06:{i // 60 % 60:02d}:{i % 60:02d}Z n1 trainer: step {i} "
                   f"loss {2.5 - i / 10000:.4f} tokens/s {41000 + i % 97}")
        if i in extra:
            out.append(extra[i])
    path.write_text("\n".join(out) + "\n")
    return path


def test_rules_and_rare_templates_are_found_in_order(tmp_path: Path,
                                                     library: FaultLibrary) -> None:
    log = write_log(tmp_path / "train.log", 1000, {
        300: f"2024-06-10T06:05:00Z n1 kernel: {XID}",
        700: "2024-06-10T06:11:40Z n1 trainer: checkpoint writer stalled on /mnt/ckpt"})
    findings = list(diagnose_logs([log], library))
    assert [(f.line, f.fault_id, f.anomaly) for f in findings] == [
        (302, "gpu.xid.79", None), (703, None, "rare_template")]
    xid, rare = findings
    assert xid.score == 1.0 and xid.timestamp == 1717999500.0
    assert rare.template == "<TIME> n1 trainer: checkpoint writer stalled on /mnt/ckpt"
    assert 0.9 < rare.score <= 1.0


def test_a_steady_log_has_no_findings(tmp_path: Path, library: FaultLibrary) -> None:
    assert list(diagnose_logs([write_log(tmp_path / "ok.log", 2000, {})], library)) == []


def test_small_files_get_rule_findings_but_no_rarity(tmp_path: Path,
                                                     library: FaultLibrary) -> None:
    log = tmp_path / "short.log"
    log.write_text(f"hello\nsomething odd\n{XID}\n")
    assert [(f.line, f.fault_id) for f in diagnose_logs([log], library)] == [(3, "gpu.xid.79")]


@pytest.mark.parametrize(("line", "expected"), [
    ("2024-06-10T06:13:20.5+00:00 n1 kernel: x", 1718000000.5),
    ("2024-06-10 06:13:20,500 INFO trainer: x", 1718000000.5),
    ("Jun 10 06:13:20 n1 kernel: x", 1718000000.0),
    ("[  123.456] no wall clock here", None),
    ("2024-13-40T99:99:99Z not a time", None),
])
def test_line_timestamps(line: str, expected: float | None) -> None:
    assert line_timestamp(line, 2024) == expected


def test_cli_prints_json_lines_and_refuses_missing_files(tmp_path: Path) -> None:
    log = tmp_path / "k.log"
    log.write_text(f"{XID}\n")
    result = CliRunner().invoke(app, ["diagnose", "logs", str(log), "--json"])
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in result.output.splitlines()]
    assert (row["line"], row["fault_id"], row["anomaly"]) == (1, "gpu.xid.79", None)
    missing = CliRunner().invoke(app, ["diagnose", "logs", str(tmp_path / "nope.log")])
    assert missing.exit_code == 2 and "no such file" in missing.output
