"""Scheduler events (a node went down, a job failed) as OTLP log records on ``vigil.events``.

OpenTelemetry models an event as a log record with an ``event.name`` attribute; Vigil's
events follow that, so the same codec and the same detectors read them as they read logs.
One message holds every event of one entity's poll, keyed by that entity's node or job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vigil.collectors.base import Publisher

from vigil.bus import Topic
from vigil.otlp import LogBatch, LogLine, encode_logs

WARNING = "Warning"
NORMAL = "Normal"


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    name: str  # event.name, e.g. "slurm.node.state"
    entity: str  # topology id the event is about, e.g. "node:n1"
    key: str  # Kafka key: the node, or the job for job-level events
    body: str  # one readable sentence
    time: float
    severity: str = NORMAL
    attributes: Mapping[str, str] = field(default_factory=dict)
    host: str = ""  # host.name when the entity lives on one host


def publish_events(publisher: Publisher, events: list[ClusterEvent]) -> int:
    """Publish `events`, one message per entity; returns how many were published."""
    by_entity: dict[tuple[str, str, str], list[LogLine]] = {}
    for event in events:
        line = LogLine(body=event.body, timestamp=event.time, severity_text=event.severity,
                       attributes={"event.name": event.name, **event.attributes})
        by_entity.setdefault((event.entity, event.key, event.host), []).append(line)
    for (entity, key, host), lines in by_entity.items():
        resource = {"vigil.entity": entity, **({"host.name": host} if host else {})}
        publisher.publish(Topic.EVENTS, encode_logs([LogBatch(resource=resource, lines=lines)]),
                          key=key)
    return len(events)
