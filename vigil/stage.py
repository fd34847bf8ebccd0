"""A pipeline stage: a consumer-group member that handles each message and dead-letters bad ones."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from vigil import telemetry
from vigil.bus import Bus

log = logging.getLogger(__name__)


class BadMessage(ValueError):
    """A message this stage cannot use; it goes to the dead-letter topic with this reason."""


class ConsumerStage(ABC):
    """Runs `handle()` for every message of `topics` in a background thread.

    `start()` returns at once; `ready` is set once the group join has given this member its
    partitions; `shutdown()` is safe without `start()` and flushes what the stage holds.
    """

    def __init__(self, bus: Bus, name: str, group: str, topics: Sequence[str]) -> None:
        self.bus = bus
        self.name = name
        self.group = group
        self.topics = list(topics)
        self.ready = threading.Event()
        self.counters = telemetry.component_counters(name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def handle(self, message: Any, now: float) -> None:
        """Handle one ConsumerRecord; raise BadMessage for input that cannot be used."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self.bus.flush()

    def _run(self) -> None:
        consumer = self.bus.consumer(self.group, self.topics)
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200)
                if not self.ready.is_set() and consumer.assignment():
                    self.ready.set()
                    log.info("stage ready", extra={"stage": self.name,
                                                   "partitions": len(consumer.assignment())})
                now = time.time()
                for records in polled.values():
                    for message in records:
                        self._handle_one(message, now)
        except Exception:
            log.exception("stage stopped by an unexpected error", extra={"stage": self.name})
        finally:
            consumer.close()

    def _handle_one(self, message: Any, now: float) -> None:
        self.counters.add_received()
        try:
            self.handle(message, now)
        except BadMessage as exc:
            self.counters.add_errored()
            self.bus.dead_letter(message, str(exc), self.name)
        except Exception as exc:  # a bug must not stop the stage; keep the message for replay
            log.exception("handler failed", extra={"stage": self.name})
            self.counters.add_errored()
            self.bus.dead_letter(message, f"handler failed: {type(exc).__name__}: {exc}",
                                 self.name)
