"""Records: JSON round trips, schema versions, and clear errors for payloads that do not fit."""

from __future__ import annotations

import json

import pytest

from vigil.records import (
    Action,
    ActionState,
    Alert,
    Incident,
    IncidentState,
    RecordError,
    Severity,
    from_json,
    to_json,
)

ALERT = Alert(
    fault_id="gpu.xid.79", entity="gpu:gpu-a-002/3", node="gpu-a-002",
    severity=Severity.CRITICAL, summary="GPU has fallen off the bus", detector="log_rules",
    observed_at=1700000000.25, detected_at=1700000001.5, evidence={"pci": "0000:5d:00"},
)


def test_round_trips() -> None:
    incident = Incident(
        id="inc-1", title="t", severity=Severity.WARNING, state=IncidentState.OPEN,
        root_entity="node:n1", root_fault_id="host.oom_kill", explanation="e",
        opened_at=1.0, updated_at=2.0, alert_fingerprints=("a", "b"), entities=("node:n1",),
    )
    action = Action(id="act-1", incident_id="inc-1", playbook="node.drain_and_reset",
                    step="cordon", target="node:n1", state=ActionState.PROPOSED, dry_run=True,
                    created_at=3.0)
    assert from_json(Alert, to_json(ALERT)) == ALERT
    assert from_json(Incident, to_json(incident)) == incident
    assert from_json(Action, to_json(action)) == action


def test_fingerprint_is_fault_and_entity() -> None:
    later = Alert(**{**{f: getattr(ALERT, f) for f in ALERT.__slots__}, "observed_at": 5.0})
    other = Alert(**{**{f: getattr(ALERT, f) for f in ALERT.__slots__}, "entity": "gpu:x/1"})
    assert later.fingerprint == ALERT.fingerprint
    assert other.fingerprint != ALERT.fingerprint


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"fault_id": "x"}', "invalid Alert"),
    (json.dumps({**json.loads(to_json(ALERT)), "schema": 99}).encode(), "schema version 99"),
    (json.dumps({**json.loads(to_json(ALERT)), "colour": "red"}).encode(), "unknown field"),
    (json.dumps({**json.loads(to_json(ALERT)), "severity": "dire"}).encode(), "invalid Alert"),
])
def test_bad_payloads_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        from_json(Alert, payload)
