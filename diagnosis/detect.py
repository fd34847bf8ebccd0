"""The detection stage: decodes telemetry from Kafka, runs the detectors, publishes alerts."""

from __future__ import annotations

import logging
from typing import Any

from vigil.diagnosis.base import Detector
from vigil.diagnosis.dedupe import DEFAULT_REPEAT_AFTER_S, Dedupe

from vigil.bus import Bus, Topic
from vigil.frames import MetricFrame
from vigil.otlp import CodecError, LogBatch
from vigil.otlp_wire import LogsDecoder, MetricsDecoder
from vigil.records import Alert, to_json
from vigil.stage import BadMessage, ConsumerStage

log = logging.getLogger(__name__)


class DetectStage(ConsumerStage):
    """A consumer-group member over metrics and logs; more members share the partitions.

    Telemetry is keyed by node, so each node's data reaches one member, which holds that
    node's detector state. The metric messages of one poll are decoded one by one and then
    handed to the detectors as one frame: a node's scrape is a few hundred samples, and a
    detector's vectorised work costs about the same for one scrape as for a hundred.
    Alerts are de-duplicated by fingerprint before they are sent; `dropped` counts repeats.
    """

    def __init__(self, bus: Bus, detectors: list[Detector], group: str = "vigil-detect",
                 repeat_after_s: float = DEFAULT_REPEAT_AFTER_S) -> None:
        super().__init__(bus, "detect", group, [Topic.METRICS, Topic.LOGS])
        self.detectors = detectors
        self.dedupe = Dedupe(repeat_after_s)
        self._metrics = MetricsDecoder()
        self._logs = LogsDecoder()

    def handle(self, message: Any, now: float) -> None:
        if message.topic == Topic.LOGS:
            self.publish(self._detect_logs(self._decode_logs(message), now))
        else:
            self.publish(self._detect_metrics([self._decode_metrics(message)], now))

    def handle_many(self, messages: list[Any], now: float) -> None:
        if not messages or messages[0].topic == Topic.LOGS:
            super().handle_many(messages, now)
            return
        frames, decoded = [], []
        for message in messages:
            self.counters.add_received()
            try:
                frames.append(self._decode_metrics(message))
                decoded.append(message)
            except BadMessage as exc:
                self.counters.add_errored()
                self.bus.dead_letter(message, str(exc), self.name)
        try:
            alerts = self._detect_metrics(frames, now)
        except Exception as exc:  # a bug must not stop the stage; keep the messages for replay
            log.exception("detectors failed", extra={"stage": self.name})
            for message in decoded:
                self.counters.add_errored()
                self.bus.dead_letter(message, f"handler failed: {type(exc).__name__}: {exc}",
                                     self.name)
            return
        self.publish(alerts)

    def _decode_metrics(self, message: Any) -> MetricFrame:
        try:
            return self._metrics.decode(message.value)
        except CodecError as exc:
            raise BadMessage(f"not an OTLP {message.topic} batch: {exc}") from exc

    def _decode_logs(self, message: Any) -> list[LogBatch]:
        try:
            return self._logs.decode(message.value)
        except CodecError as exc:
            raise BadMessage(f"not an OTLP {message.topic} batch: {exc}") from exc

    def _detect_metrics(self, frames: list[MetricFrame], now: float) -> list[Alert]:
        if not frames:
            return []
        frame = MetricFrame.concat(frames)
        return [a for d in self.detectors for a in d.observe_metrics(frame, now)]

    def _detect_logs(self, batches: list[LogBatch], now: float) -> list[Alert]:
        return [a for batch in batches for d in self.detectors for a in d.observe_logs(batch, now)]

    def publish(self, alerts: list[Alert]) -> None:
        new = self.dedupe(alerts)
        for alert in new:
            self.bus.publish(Topic.ALERTS, to_json(alert), key=alert.node)
        self.counters.add_sent(len(new))
        self.counters.add_dropped(len(alerts) - len(new))
