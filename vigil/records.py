"""Typed records that travel between stages (alerts, incidents, actions) and their JSON codec."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

SCHEMA_VERSION = 1


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class IncidentState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class ActionState(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Alert:
    """One detector's finding about one entity at one time."""

    fault_id: str  # fault-mode id from the library, e.g. "gpu.xid.79"
    entity: str  # topology id, e.g. "gpu:gpu-a-017/3"
    node: str  # the host the entity lives on (Kafka key), e.g. "gpu-a-017"
    severity: Severity
    summary: str
    detector: str
    observed_at: float  # when the evidence happened (unix seconds)
    detected_at: float  # when the detector decided
    evidence: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @property
    def fingerprint(self) -> str:
        """Identity for de-duplication: the same fault on the same entity is the same alert."""
        return hashlib.sha1(f"{self.fault_id}|{self.entity}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Incident:
    """A group of related alerts with one probable root cause."""

    id: str
    title: str
    severity: Severity
    state: IncidentState
    root_entity: str
    root_fault_id: str
    explanation: str
    opened_at: float
    updated_at: float
    alert_fingerprints: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()
    first_observed_at: float = 0.0
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Action:
    """One playbook step proposed or taken for an incident."""

    id: str
    incident_id: str
    playbook: str
    step: str
    target: str
    state: ActionState
    dry_run: bool
    created_at: float
    detail: str = ""
    schema: int = SCHEMA_VERSION


class RecordError(ValueError):
    """A payload that is not a valid record of the expected type."""


R = TypeVar("R", Alert, Incident, Action)



def to_json(record: Alert | Incident | Action) -> bytes:
    return json.dumps(dataclasses.asdict(record), separators=(",", ":"), sort_keys=True).encode()


def from_json(kind: type[R], payload: bytes) -> R:
    """Decode `payload` into `kind`, raising RecordError with the reason when it does not fit."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise RecordError(
            f"unsupported schema version {schema!r} (this build reads {SCHEMA_VERSION})"
        )
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecordError(f"unknown field(s) for {kind.__name__}: {', '.join(unknown)}")
    try:
        return kind(**_coerce(kind, data))
    except (TypeError, ValueError) as exc:
        raise RecordError(f"invalid {kind.__name__}: {exc}") from exc


def _coerce(kind: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if "severity" in out:
        out["severity"] = Severity(out["severity"])
    if "state" in out:
        out["state"] = (IncidentState if kind is Incident else ActionState)(out["state"])
    for name in ("alert_fingerprints", "entities"):
        if name in out:
            out[name] = tuple(out[name])
    return out
