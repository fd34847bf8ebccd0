"""The Collector interface and a base for collectors that poll their source on an interval."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Protocol

from vigil import telemetry

log = logging.getLogger(__name__)


class Collector(Protocol):
    """Reads one kind of source and publishes OTLP batches to Kafka.

    `start()` returns quickly and runs the work in the background; `shutdown()` is safe
    without `start()`.
    """

    name: str

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


class PollingCollector(ABC):
    """Calls `collect()` every `interval_s` in a background thread; errors are logged, counted."""

    def __init__(self, name: str, interval_s: float) -> None:
        self.name = name
        self.interval_s = interval_s
        self.counters = telemetry.component_counters(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def collect(self, now: float) -> None:
        """Read the source once and publish what was new."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.collect(time.time())
            except Exception:  # a bad scrape must not end collection
                log.exception("collection failed", extra={"collector": self.name})
                self.counters.add_errored()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
