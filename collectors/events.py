"""Scheduler events (a node went down, a job failed) as OTLP log records on ``vigil.events``.

OpenTelemetry models an event as a log record with an ``event.name`` attribute; Vigil's
events follow that, so the same codec and the same detectors read them as they read logs.
One message per Kafka key (the node, or the job for job-level events) holds one batch per
entity, so a poll that saw a hundred changes sends a handful of messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vigil.collectors.base import Publisher

from vigil.bus import Topic
from vigil.otlp import LogBatch, LogLine, encode_logs

WARNING = "Warning"
NORMAL = "Normal"


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    name: str  # event.name, e.g. "slurm.node.state"
    entity: str  # topology id the event is about, e.g. "node:n1"; "" where it has none
    key: str  # Kafka key: the node, the job for job-level events, the source for the rest
    body: str  # one readable sentence
    time: float
    severity: str = NORMAL
    attributes: Mapping[str, str] = field(default_factory=dict)
    host: str = ""  # host.name when the entity lives on one host


def publish_events(publisher: Publisher, events: Iterable[ClusterEvent]) -> int:
    """Publish `events`; returns how many there were."""
    by_key: dict[str, dict[tuple[str, str], list[LogLine]]] = {}
    count = 0
    for event in events:
        line = LogLine(body=event.body, timestamp=event.time, severity_text=event.severity,
                       attributes={"event.name": event.name, **event.attributes})
        by_key.setdefault(event.key, {}).setdefault((event.host, event.entity), []).append(line)
        count += 1
    for key, groups in by_key.items():
        batches = [LogBatch(resource=_resource(host, entity), lines=lines)
                   for (host, entity), lines in groups.items()]
        publisher.publish(Topic.EVENTS, encode_logs(batches), key=key)
    return count


def _resource(host: str, entity: str) -> dict[str, str]:
    resource = {"host.name": host, "vigil.entity": entity}
    return {name: value for name, value in resource.items() if value}
