"""In-memory stand-ins for what collectors talk to: the Kafka bus and their counters."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from opentelemetry.context import Context
from opentelemetry.metrics import Counter
from opentelemetry.util.types import Attributes

from vigil.otlp import MetricSample
from vigil.telemetry import ComponentCounters


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    value: bytes
    key: str | None
    headers: list[tuple[str, bytes]] | None


class RecordingBus:
    """Stands in for `vigil.bus.Bus`: keeps every published message, in order, in memory."""

    def __init__(self) -> None:
        self.published: list[Published] = []
        self._lock = threading.Lock()

    def publish(
        self, topic: str, value: bytes, key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        with self._lock:
            self.published.append(Published(str(topic), value, key, headers))


class TallyCounter(Counter):
    """An OpenTelemetry Counter that adds up its increments in memory."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.total = 0.0
        self._lock = threading.Lock()  # scrapes count errors from pool threads

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        with self._lock:
            self.total += amount


class Tally:
    """A component's four counters, kept in memory so a test can read their totals."""

    def __init__(self) -> None:
        self._counters = {n: TallyCounter(n) for n in ("received", "sent", "dropped", "errored")}
        self.component = ComponentCounters(
            received=self._counters["received"], sent=self._counters["sent"],
            dropped=self._counters["dropped"], errored=self._counters["errored"],
            attributes={"component": "test"},
        )

    def totals(self) -> dict[str, float]:
        return {name: counter.total for name, counter in self._counters.items()}


def as_exported(samples: list[MetricSample]) -> list[MetricSample]:
    """`samples` as the exporter labelled them: without the ``vigil.entity`` Vigil adds."""
    return [replace(s, labels={k: v for k, v in s.labels.items() if k != "vigil.entity"})
            for s in samples]
