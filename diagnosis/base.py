"""The Detector interface: feed it telemetry, it returns alerts."""

from __future__ import annotations

from typing import Protocol

from vigil.frames import MetricFrame
from vigil.otlp import LogBatch
from vigil.records import Alert


class Detector(Protocol):
    """Turns telemetry into alerts. Holds per-entity state; does no I/O; `now` is passed in.

    Metrics come as columns (`MetricFrame`): a detector that looks at every sample should
    work on whole columns with numpy, and loop in Python only over the few rows that matter.
    """

    name: str

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]: ...

    def observe_metrics(self, frame: MetricFrame, now: float) -> list[Alert]: ...
