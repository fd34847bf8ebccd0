"""The Collector interface and a base for collectors that poll their source on an interval."""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from typing import Protocol

from vigil.worker import Worker

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where collectors send their batches: `vigil.bus.Bus`, or the spool in front of it."""

    def publish(
        self, topic: str, value: bytes, key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None: ...


class Collector(Protocol):
    """Reads one kind of source and publishes OTLP batches to Kafka.

    `start()` returns quickly and runs the work in the background; `shutdown()` is safe
    without `start()`.
    """

    name: str

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


class PollingCollector(Worker):
    """Calls `collect()` every `interval_s` in a background thread; errors are logged, counted."""

    def __init__(self, name: str, interval_s: float) -> None:
        super().__init__(name)
        self.interval_s = interval_s

    @abstractmethod
    def collect(self, now: float) -> None:
        """Read the source once and publish what was new."""

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.collect(time.time())
            except Exception:  # a bad scrape must not end collection
                log.exception("collection failed", extra={"collector": self.name})
                self.counters.add_errored()
            self.stopping.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
