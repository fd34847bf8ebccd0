"""Tests for the benchmark report: Markdown with its plots, and empty runs that still write."""

from __future__ import annotations

import re
from pathlib import Path

from vigil.sim.report import LATENCY_PLOT, RECALL_PLOT, ROOT_CAUSE_PLOT, write_report
from vigil.sim.scoring import Scores, score
from vigil.sim.truth import HealthyWindow, TruthFault

from vigil.records import Alert, Incident, IncidentState, Severity

T0 = 1_700_000_000.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
META = {"command": "vigil bench --seed 7 | tee out.txt", "seed": "7", "nodes": "4"}


def alert(entity: str, node: str, at: float) -> Alert:
    return Alert(fault_id="test.fault", entity=entity, node=node, severity=Severity.WARNING,
                 summary="test", detector="test", observed_at=T0 + at, detected_at=T0 + at)


def incident(root: str, opened: float, entities: tuple[str, ...] = ()) -> Incident:
    return Incident(id=root, title="test", severity=Severity.WARNING, state=IncidentState.OPEN,
                    root_entity=root, root_fault_id="test.fault", explanation="test",
                    opened_at=T0 + opened, updated_at=T0 + opened, entities=entities)


def run_scores(latencies: tuple[float, float] = (2.0, 40.0)) -> Scores:
    """Two detected faults of two layers, one undetected, one right root cause."""
    faults = [
        TruthFault("xid79-gpu", "gpu.xid.79", "compute", "gpu:n1/5", T0, T0 + 60,
                   ("gpu:n1/5",), ("n1",)),
        TruthFault("nic-down", "net.nic.down", "network", "nic:n2/mlx5_0", T0 + 1000,
                   T0 + 1060, ("nic:n2/mlx5_0",), ("n2",)),
        TruthFault("pfs-slow", "storage.pfs.slow", "storage", "storage:pfs-1", T0 + 2000,
                   T0 + 2060, ("storage:pfs-1",), ()),
    ]
    alerts = [alert("gpu:n1/5", "n1", latencies[0]), alert("nic:n2/mlx5_0", "n2",
                                                           1000 + latencies[1]),
              alert("gpu:n3/0", "n3", 5000)]
    incidents = [incident("gpu:n1/5", 20), incident("switch:leaf-1", 1050, ("nic:n2/mlx5_1",))]
    return score(faults, [HealthyWindow(T0 + 4000, T0 + 7600, 4)], alerts, incidents)


def images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_report_references_the_plots_it_writes(tmp_path: Path) -> None:
    path = write_report(run_scores(), tmp_path / "out", "Nightly benchmark", META)
    assert path == tmp_path / "out" / "report.md"
    text = path.read_text()
    assert text.startswith("# Nightly benchmark\n")
    assert images(text) == [RECALL_PLOT, LATENCY_PLOT, ROOT_CAUSE_PLOT]
    for name in images(text):
        assert (path.parent / name).read_bytes().startswith(PNG_MAGIC)
    assert "no data" not in text


def test_report_tables_and_meta(tmp_path: Path) -> None:
    text = write_report(run_scores(), tmp_path, "Run", META).read_text()
    assert "| command | vigil bench --seed 7 \\| tee out.txt |" in text
    assert "| seed | 7 |" in text
    # overall: 3 faults, 2 detected, 1 right root cause; the alert in healthy time is false.
    assert "| **overall** | 3 | 2 | 66.7% | 66.7% |" in text
    assert "| compute | 1 | 1 | 100.0% | 100.0% | 2.0 s |" in text
    assert "| storage | 1 | 0 | 0.0% | - |" in text
    assert "False alerts in healthy time: 1 over 4.00 node-hours (250.00 per 1000" in text
    assert "| xid79-gpu | `gpu.xid.79` | compute | `gpu:n1/5` | yes | 2.0 s | yes | yes " \
           "| `gpu:n1/5` | 20.0 s |" in text
    assert "| nic-down | `net.nic.down` | network | `nic:n2/mlx5_0` | yes | 40.0 s | no | no " \
           "| `switch:leaf-1` | - |" in text
    assert "| pfs-slow | `storage.pfs.slow` | storage | `storage:pfs-1` | no | - | no | no " \
           "| - | - |" in text


def test_wide_latency_range_still_plots(tmp_path: Path) -> None:
    path = write_report(run_scores((0.0, 900.0)), tmp_path, "Wide", {})
    assert (tmp_path / LATENCY_PLOT).read_bytes().startswith(PNG_MAGIC)
    assert "## Run" not in path.read_text()


def test_empty_scores_write_no_data(tmp_path: Path) -> None:
    path = write_report(score([], [], [], []), tmp_path, "Empty", {"seed": "1"})
    text = path.read_text()
    assert images(text) == []
    assert text.count("no data") == 4  # three plots and the fault table
    assert "| **overall** | 0 | 0 | - | - |" in text
    assert "(n/a per 1000 node-hours)" in text
    assert not list(tmp_path.glob("*.png"))


def test_nothing_detected_and_stale_plots_removed(tmp_path: Path) -> None:
    write_report(run_scores(), tmp_path, "First", {})
    fault = TruthFault("s", "f", "compute", "gpu:n1/0", T0, T0 + 1, ("gpu:n1/0",), ("n1",))
    text = write_report(score([fault], [], [], []), tmp_path, "Second", {}).read_text()
    assert images(text) == [RECALL_PLOT]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [RECALL_PLOT]
