"""The Detector interface: feed it telemetry batches, it returns alerts."""

from __future__ import annotations

from typing import Protocol

from vigil.otlp import LogBatch, MetricBatch
from vigil.records import Alert


class Detector(Protocol):
    """Turns telemetry into alerts. Holds per-entity state; does no I/O; `now` is passed in."""

    name: str

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]: ...

    def observe_metrics(self, batch: MetricBatch, now: float) -> list[Alert]: ...
