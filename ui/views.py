"""Flat, stable views of records for tables and `--json` output."""

from __future__ import annotations

import time

from vigil.records import Incident


def iso(ts: float) -> str:
    """Unix seconds as an ISO-8601 UTC time with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def incident_row(incident: Incident) -> dict[str, object]:
    """An incident as one flat JSON object; keys are stable for scripts."""
    return {
        "id": incident.id,
        "state": incident.state.value,
        "severity": incident.severity.value,
        "title": incident.title,
        "root_entity": incident.root_entity,
        "root_fault_id": incident.root_fault_id,
        "explanation": incident.explanation,
        "entities": list(incident.entities),
        "alerts": len(incident.alert_fingerprints),
        "first_observed_at": iso(incident.first_observed_at),
        "opened_at": iso(incident.opened_at),
        "updated_at": iso(incident.updated_at),
        # Seconds from the first evidence (log line time) to the incident being opened.
        "detect_latency_s": round(incident.opened_at - incident.first_observed_at, 3),
    }
