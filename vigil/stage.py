"""A pipeline stage: a consumer-group member that handles each message and dead-letters bad ones."""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from vigil.bus import Bus
from vigil.worker import Worker

log = logging.getLogger(__name__)


class BadMessage(ValueError):
    """A message this stage cannot use; it goes to the dead-letter topic with this reason."""


class ConsumerStage(Worker):
    """Runs `handle()` for every message of `topics` in a background thread.

    `start()` returns at once; `ready` is set once the group join has given this member its
    partitions; `shutdown()` is safe without `start()` and flushes what the stage holds.
    """

    def __init__(self, bus: Bus, name: str, group: str, topics: Sequence[str]) -> None:
        super().__init__(name)
        self.bus = bus
        self.group = group
        self.topics = list(topics)
        self.ready = threading.Event()

    @abstractmethod
    def handle(self, message: Any, now: float) -> None:
        """Handle one ConsumerRecord; raise BadMessage for input that cannot be used."""

    def shutdown(self) -> None:
        super().shutdown()
        self.bus.flush()

    def run(self) -> None:
        while not self.stopping.is_set():
            consumer = self.bus.consumer(self.group, self.topics)
            try:
                self._consume(consumer)
            except Exception:  # the broker went away or the client broke: rejoin and go on
                log.exception("consumer failed; rejoining", extra={"stage": self.name})
                self.stopping.wait(1.0)
            finally:
                consumer.close()

    def _consume(self, consumer: Any) -> None:
        while not self.stopping.is_set():
            polled = consumer.poll(timeout_ms=200)
            if not self.ready.is_set() and consumer.assignment():
                self.ready.set()
                log.info("stage ready", extra={"stage": self.name,
                                               "partitions": len(consumer.assignment())})
            now = time.time()
            for records in polled.values():
                self.handle_many(records, now)

    def handle_many(self, messages: list[Any], now: float) -> None:
        """Handle the records of one partition from one poll, in order.

        A stage that gains from working on many records at once overrides this; it must
        dead-letter what it cannot use, as `_handle_one` does.
        """
        for message in messages:
            self._handle_one(message, now)

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
