"""The detection stage: decodes telemetry from Kafka, runs the detectors, publishes alerts."""

from __future__ import annotations

from typing import Any

from vigil.diagnosis.base import Detector

from vigil.bus import Bus, Topic
from vigil.otlp import CodecError, decode_logs, decode_metrics
from vigil.records import to_json
from vigil.stage import BadMessage, ConsumerStage


class DetectStage(ConsumerStage):
    def __init__(self, bus: Bus, detectors: list[Detector], group: str = "vigil-detect") -> None:
        super().__init__(bus, "detect", group, [Topic.METRICS, Topic.LOGS])
        self.detectors = detectors

    def handle(self, message: Any, now: float) -> None:
        try:
            if message.topic == Topic.LOGS:
                alerts = [a for batch in decode_logs(message.value)
                          for d in self.detectors for a in d.observe_logs(batch, now)]
            else:
                alerts = [a for batch in decode_metrics(message.value)
                          for d in self.detectors for a in d.observe_metrics(batch, now)]
        except CodecError as exc:
            raise BadMessage(f"not an OTLP {message.topic} batch: {exc}") from exc
        for alert in alerts:
            self.bus.publish(Topic.ALERTS, to_json(alert), key=alert.node)
        self.counters.add_sent(len(alerts))
