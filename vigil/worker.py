"""The lifecycle every long-running part shares: a named background thread, started and stopped."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from vigil import telemetry


class Worker(ABC):
    """Runs `run()` in a daemon thread until `stopping` is set.

    `start()` returns at once; `shutdown()` is safe without `start()` and waits for the
    thread to finish its current round. Every worker reports the same four counters.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = telemetry.component_counters(name)
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def run(self) -> None:
        """The work; return when `self.stopping` is set."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
