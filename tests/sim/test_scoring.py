"""Tests for benchmark scoring: every matching rule, with figures worked out by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from vigil.sim.scoring import LayerScores, Scores, entity_node, ranked_candidates, score
from vigil.sim.truth import LAYERS, HealthyWindow, TruthError, TruthFault, read_truth, write_truth

from vigil.records import Alert, Incident, IncidentState, Severity

T0 = 1_700_000_000.0
JOB = "job:llm-7b-01"

# Windows with the default 300 s grace, relative to T0: F1 [95, 500], F2 [145, 550],
# F3 [995, 1400], F4 [1995, 2360]. F1 and F2 overlap in time and share the job.
F1 = TruthFault("xid79-gpu", "gpu.xid.79", "compute", "gpu:gpu-a-003/5", T0 + 100, T0 + 200,
                ("gpu:gpu-a-003/5", "node:gpu-a-003", JOB), ("gpu-a-003",))
F2 = TruthFault("nic-down", "net.nic.down", "network", "nic:gpu-a-002/mlx5_3", T0 + 150,
                T0 + 250, ("nic:gpu-a-002/mlx5_3", JOB), ("gpu-a-002",))
F3 = TruthFault("pfs-slow", "storage.pfs.slow", "storage", "storage:pfs-1", T0 + 1000,
                T0 + 1100, ("storage:pfs-1",), ())
F4 = TruthFault("ecc-dbe", "gpu.ecc.dbe", "compute", "gpu:gpu-a-001/0", T0 + 2000, T0 + 2060,
                ("gpu:gpu-a-001/0",), ("gpu-a-001",))
FAULTS = [F1, F2, F3, F4]
# 10 nodes x 1 h + 8 nodes x 1 h = 18 node-hours.
HEALTHY = [HealthyWindow(T0 + 3000, T0 + 6600, 10), HealthyWindow(T0 + 7000, T0 + 10600, 8)]


def alert(entity: str, node: str, observed: float, detected: float | None = None,
          fault_id: str = "test.fault") -> Alert:
    """An alert at T0 + `observed`, decided at T0 + `detected` (default: the same time)."""
    return Alert(
        fault_id=fault_id, entity=entity, node=node, severity=Severity.CRITICAL,
        summary="test", detector="test", observed_at=T0 + observed,
        detected_at=T0 + (observed if detected is None else detected),
    )


def incident(root: str, opened: float, entities: tuple[str, ...] = ()) -> Incident:
    return Incident(
        id=f"inc-{root}-{opened}", title="test", severity=Severity.CRITICAL,
        state=IncidentState.OPEN, root_entity=root, root_fault_id="test.fault",
        explanation="test", opened_at=T0 + opened, updated_at=T0 + opened, entities=entities,
    )


@dataclass(frozen=True, slots=True)
class RankedIncident:
    """Stands in for an Incident that carries ranked root candidates (a field to come)."""

    root_entity: str
    opened_at: float
    candidates: tuple[str, ...]
    entities: tuple[str, ...] = ()


ALERTS = [
    alert("gpu:gpu-a-003/5", "gpu-a-003", 110, 112, "gpu.xid.79"),  # F1, named
    alert(JOB, "", 160, 175),  # F1 and F2
    alert("nic:gpu-a-002/mlx5_3", "gpu-a-002", 155, 160),  # F2: first alert 10 s
    alert("gpu:gpu-a-009/1", "gpu-a-009", 300),  # in F1/F2 windows, matches nothing
    alert("gpu:gpu-a-001/0", "gpu-a-001", 1997, 1998),  # F4, 2 s early: clamped to 0
    alert("node:gpu-a-001", "gpu-a-001", 2100, 2130),  # F4 through its node
    alert("gpu:gpu-a-001/0", "gpu-a-001", 2500),  # outside every window: not judged
    alert("gpu:gpu-a-003/5", "gpu-a-003", 94),  # 6 s before F1: outside every window
    alert("gpu:gpu-a-007/2", "gpu-a-007", 4000),  # healthy: false
    alert("gpu:gpu-a-007/2", "gpu-a-007", 8000),  # healthy: false
    alert("node:gpu-a-008", "gpu-a-008", 9000),  # healthy: false
]
INCIDENTS: list[Incident | RankedIncident] = [
    incident("gpu:gpu-a-003/5", 130, ("gpu:gpu-a-003/5",)),  # F1, right: 30 s
    incident("switch:leaf-1-2", 170, ("nic:gpu-a-002/mlx5_1",)),  # F2 by node, wrong
    incident("nic:gpu-a-002/mlx5_3", 200),  # F2, right and later: chosen, 50 s
    RankedIncident("gpu:gpu-a-001/1", T0 + 2040,  # F4 by node, wrong, right in the top 3
                   ("gpu:gpu-a-001/1", "gpu:gpu-a-001/0", "node:gpu-a-001")),
]


@pytest.fixture
def scores() -> Scores:
    return score(FAULTS, HEALTHY, ALERTS, INCIDENTS)


def test_detection_and_recall(scores: Scores) -> None:
    detected = [r.detected for r in scores.overall.per_fault]
    assert detected == [True, True, False, True]
    assert (scores.overall.faults, scores.overall.detected) == (4, 3)
    assert scores.overall.recall == 0.75
    assert scores.by_layer["compute"].recall == 1.0
    assert scores.by_layer["network"].recall == 1.0
    assert scores.by_layer["storage"].recall == 0.0
    # only F1's alert names its mode; a detected fault need not be named
    assert [r.named for r in scores.overall.per_fault] == [True, False, False, False]
    assert scores.overall.named_recall == 0.25


def test_time_to_first_alert_uses_detected_at_and_clamps(scores: Scores) -> None:
    first = [r.first_alert_s for r in scores.overall.per_fault]
    assert first == [pytest.approx(12.0), pytest.approx(10.0), None, 0.0]


def test_alert_latency_percentiles_interpolate(scores: Scores) -> None:
    overall = scores.overall  # over [12, 10, 0]
    assert overall.alert_latency_p50_s == pytest.approx(10.0)
    assert overall.alert_latency_p95_s == pytest.approx(11.8)
    assert overall.alert_latency_p99_s == pytest.approx(11.96)
    compute = scores.by_layer["compute"]  # over [12, 0]
    assert compute.alert_latency_p50_s == pytest.approx(6.0)
    assert compute.alert_latency_p95_s == pytest.approx(11.4)
    assert scores.by_layer["storage"].alert_latency_p50_s is None


def test_precision_judges_only_alerts_in_windows(scores: Scores) -> None:
    # Judged: 6 alerts in fault windows + 3 in healthy ones; 5 of them match a fault.
    assert (scores.overall.alerts, scores.overall.true_alerts) == (9, 5)
    assert scores.overall.precision == pytest.approx(5 / 9)
    # Per layer, an alert about a concurrent fault of another layer still counts as true.
    compute = scores.by_layer["compute"]
    assert (compute.alerts, compute.true_alerts) == (6, 5)
    network = scores.by_layer["network"]
    assert (network.alerts, network.true_alerts) == (3, 2)
    assert scores.by_layer["storage"].precision is None


def test_false_alerts_per_1000_node_hours(scores: Scores) -> None:
    assert scores.false_alerts == 3
    assert scores.healthy_node_hours == pytest.approx(18.0)
    assert scores.false_alerts_per_1000_node_hours == pytest.approx(3 / 18 * 1000)


def test_alert_in_grace_that_matches_is_not_false() -> None:
    fault = TruthFault("s", "f", "compute", "gpu:n1/0", T0, T0 + 10, ("gpu:n1/0",), ("n1",))
    healthy = [HealthyWindow(T0 + 100, T0 + 3700, 2)]
    alerts = [alert("gpu:n1/0", "n1", 200), alert("gpu:n2/0", "n2", 200)]
    result = score([fault], healthy, alerts, [])
    assert result.false_alerts == 1
    assert result.false_alerts_per_1000_node_hours == pytest.approx(500.0)
    assert result.overall.precision == 0.5


def test_root_cause_top1_top3_and_choice_of_incident(scores: Scores) -> None:
    per_fault = scores.overall.per_fault
    assert [r.top1 for r in per_fault] == [True, True, False, False]
    assert [r.top3 for r in per_fault] == [True, True, False, True]
    assert [r.predicted_root for r in per_fault] == [
        "gpu:gpu-a-003/5", "nic:gpu-a-002/mlx5_3", None, "gpu:gpu-a-001/1"]
    assert [r.root_cause_s for r in per_fault] == [30.0, 50.0, None, None]
    assert scores.overall.root_cause_top1 == 0.5
    assert scores.overall.root_cause_top3 == 0.75
    assert scores.by_layer["compute"].root_cause_top1 == 0.5
    assert scores.by_layer["compute"].root_cause_top3 == 1.0
    assert scores.by_layer["storage"].root_cause_top3 == 0.0


def test_root_cause_latency_percentiles(scores: Scores) -> None:
    assert scores.overall.root_cause_latency_p50_s == pytest.approx(40.0)
    assert scores.overall.root_cause_latency_p95_s == pytest.approx(49.0)
    assert scores.by_layer["network"].root_cause_latency_p50_s == pytest.approx(50.0)
    assert scores.by_layer["storage"].root_cause_latency_p95_s is None


def test_without_a_right_incident_the_earliest_is_used() -> None:
    fault = TruthFault("s", "f", "compute", "gpu:n1/0", T0, T0 + 10, ("gpu:n1/0",), ("n1",))
    incidents = [
        incident("node:n1", 50), incident("gpu:n1/3", 20),
        incident("gpu:n1/0", 400),  # right, but after the window closes at 310 s
    ]
    result = score([fault], [], [], incidents).overall.per_fault[0]
    assert (result.predicted_root, result.top1, result.top3) == ("gpu:n1/3", False, False)
    incidents.append(incident("gpu:n1/0", 30))  # right: preferred to the earlier wrong one
    result = score([fault], [], [], incidents).overall.per_fault[0]
    assert (result.predicted_root, result.top1, result.root_cause_s) == ("gpu:n1/0", True, 30.0)


def test_top3_candidate_beats_earlier_wrong_incident() -> None:
    fault = TruthFault("s", "f", "network", "switch:leaf-1", T0, T0 + 10, ("switch:leaf-1",),
                       ("n1",))
    incidents: list[Incident | RankedIncident] = [
        incident("nic:n1/mlx5_0", 5),
        RankedIncident("nic:n1/mlx5_1", T0 + 6, ("nic:n1/mlx5_1", "x:1", "switch:leaf-1")),
        RankedIncident("nic:n1/mlx5_2", T0 + 4, ("nic:n1/mlx5_2", "x:1", "x:2", "switch:leaf-1")),
    ]
    result = score([fault], [], [], incidents).overall.per_fault[0]
    assert (result.predicted_root, result.top1, result.top3) == ("nic:n1/mlx5_1", False, True)


def test_incident_matching_needs_window_and_entity() -> None:
    fault = TruthFault("s", "f", "storage", "storage:pfs-1", T0, T0 + 10, ("storage:pfs-1",),
                       ("n1",))
    assert not score([fault], [], [], [incident("storage:pfs-1", 311)]).overall.per_fault[0].top1
    assert score([fault], [], [], [incident("storage:pfs-1", 310)]).overall.per_fault[0].top1
    assert score([fault], [], [], [incident("storage:pfs-1", -5)]).overall.per_fault[0].top1
    unrelated = incident("storage:pfs-2", 5, ("switch:leaf-1", "job:n1"))
    assert score([fault], [], [], [unrelated]).overall.per_fault[0].predicted_root is None
    by_node = incident("storage:pfs-2", 5, ("gpu:n1/7",))
    assert score([fault], [], [], [by_node]).overall.per_fault[0].predicted_root == "storage:pfs-2"


def test_alert_window_edges_and_grace() -> None:
    fault = TruthFault("s", "f", "host", "node:n1", T0, T0 + 10, ("node:n1",), ())
    assert score([fault], [], [alert("node:n1", "", -5)], []).overall.detected == 1
    assert score([fault], [], [alert("node:n1", "", -5.01)], []).overall.detected == 0
    assert score([fault], [], [alert("node:n1", "", 310)], []).overall.detected == 1
    late = [alert("node:n1", "", 70)]
    assert score([fault], [], late, [], grace_s=60).overall.detected == 1
    assert score([fault], [], late, [], grace_s=59).overall.detected == 0
    assert score([fault], [], late, [], grace_s=59).overall.alerts == 0


def test_candidates_fall_back_to_root() -> None:
    assert ranked_candidates(incident("gpu:n1/0", 0)) == ("gpu:n1/0",)
    assert ranked_candidates(RankedIncident("gpu:n1/0", T0, ())) == ("gpu:n1/0",)
    assert ranked_candidates(RankedIncident("gpu:n1/0", T0, ("a:1", "b:2"))) == ("a:1", "b:2")


@pytest.mark.parametrize(("entity", "node"), [
    ("gpu:gpu-a-003/5", "gpu-a-003"), ("node:gpu-a-003", "gpu-a-003"),
    ("nic:gpu-a-003/mlx5_2", "gpu-a-003"), ("switch:leaf-1-2", None), ("storage:pfs-1", None),
    (JOB, None), ("rank:llm-7b-01/3", None), ("gpu-a-003", None),
])
def test_entity_node(entity: str, node: str | None) -> None:
    assert entity_node(entity) == node


def test_empty_inputs_give_none_not_errors() -> None:
    result = score([], [], [alert("gpu:n1/0", "n1", 0)], [])
    assert result.overall == LayerScores(0, 0, None, None, 0, 0, None, None, None, None, None,
                                         None, None, None, [])
    assert result.by_layer == {}
    assert (result.false_alerts, result.false_alerts_per_1000_node_hours) == (0, None)


def test_flat_keys_are_stable_and_json_able(scores: Scores) -> None:
    flat = scores.flat()
    empty = score([], [], [], []).flat()
    assert list(flat) == list(empty)
    overall_keys = [
        "faults", "detected", "recall", "named_recall", "alerts", "true_alerts", "precision",
        "alert_latency_p50_s", "alert_latency_p95_s", "alert_latency_p99_s",
        "root_cause_top1", "root_cause_top3", "root_cause_latency_p50_s",
        "root_cause_latency_p95_s", "false_alerts", "healthy_node_hours",
        "false_alerts_per_1000_node_hours",
    ]
    assert list(flat)[: len(overall_keys)] == overall_keys
    assert len(flat) == len(overall_keys) + len(LAYERS) * (len(overall_keys) - 3)
    assert flat["recall"] == 0.75
    assert flat["compute.recall"] == 1.0
    assert flat["network.root_cause_top1"] == 1.0
    assert flat["storage.precision"] is None
    assert flat["job.faults"] == 0
    assert all(type(v) in (int, float, type(None)) for v in flat.values())
    assert json.loads(json.dumps(flat)) == flat


def test_flat_adds_unknown_layers_after_known_ones() -> None:
    fault = TruthFault("s", "f", "power", "pdu:p1", T0, T0 + 1, ("pdu:p1",), ())
    flat = score([fault], [], [], []).flat()
    assert list(flat)[-1].startswith("power.")
    assert flat["power.faults"] == 1


def test_truth_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run" / "truth.jsonl"
    write_truth(path, FAULTS, HEALTHY)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["fault"] * 4 + ["healthy"] * 2
    assert read_truth(path) == (FAULTS, HEALTHY)


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "not JSON"),
    ('{"kind": "other"}', "kind must be one of"),
    ('{"kind": "healthy", "start": 1, "end": 2}', "missing field(s) ['nodes']"),
    ('{"kind": "healthy", "start": 1, "end": 2, "nodes": 1, "x": 0}', "unknown field(s) ['x']"),
    ('{"kind": "healthy", "start": 3, "end": 2, "nodes": 1}', "end is before its start"),
    ('{"kind": "healthy", "start": 1, "end": 2, "nodes": "8"}', "healthy.nodes"),
])
def test_read_truth_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "truth.jsonl"
    path.write_text('{"kind": "healthy", "start": 1, "end": 2, "nodes": 1}\n\n' + line + "\n")
    with pytest.raises(TruthError, match=r":3: ") as caught:
        read_truth(path)
    assert message in str(caught.value)
