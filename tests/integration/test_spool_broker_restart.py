"""The spool against a real broker that dies mid-stream and comes back: no numbered message lost.

A thread publishes numbered messages at a steady rate through `SpoolingPublisher` to the
embedded Tansu broker; a kafka-python consumer reads them. Mid-stream the broker is frozen
(SIGSTOP: it acknowledges nothing more, so the messages in flight at that moment are never
acknowledged), then killed, and a few seconds later started again on the same port with its
topics re-created. Publishing goes on throughout.

Tansu here keeps its data in memory, so what it held when it died is gone with it. That loss
is the broker's, not the spool's: the publisher counts a message as sent once Kafka has
acknowledged it and forgets it. So the stream pauses once before the freeze, long enough
for the consumer to catch up with everything acknowledged; the stop itself still happens
with messages in flight and a stream running. After the restart a new consumer reads the
new broker from its beginning.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from opentelemetry.context import Context
from opentelemetry.metrics import Counter
from opentelemetry.util.types import Attributes
from vigil.collectors.spool import SpoolingPublisher
from vigil.collectors.spool_config import SpoolConfig

from vigil.broker import EmbeddedBroker, free_port
from vigil.bus import Bus, Topic
from vigil.settings import KafkaSettings
from vigil.telemetry import ComponentCounters

pytestmark = pytest.mark.integration

RATE = 400  # messages a second
KEYS = 8


class Count(Counter):
    """A counter that keeps its total (tests/collectors' Tally is not importable from here)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.total = 0.0
        self._lock = threading.Lock()

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        with self._lock:
            self.total += amount


def _counting() -> tuple[ComponentCounters, dict[str, Count]]:
    counts = {name: Count(name) for name in ("received", "sent", "dropped", "errored")}
    return ComponentCounters(**counts, attributes={"component": "spool"}), counts


class Pacer(threading.Thread):
    """Publishes message n = 0, 1, 2, ... at RATE a second until stopped; can be paused."""

    def __init__(self, publisher: SpoolingPublisher) -> None:
        super().__init__(name="pacer", daemon=True)
        self.publisher = publisher
        self.published = 0
        self.running = threading.Event()
        self.running.set()
        self.paused = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            if not self.running.is_set():
                self.paused.set()
                self.running.wait(0.05)
                next_at = time.monotonic()
                continue
            self.paused.clear()
            n = self.published
            self.publisher.publish(Topic.LOGS, f"{n:09d}".encode().ljust(200, b"."),
                                   key=f"node-{n % KEYS}")
            self.published += 1
            next_at += 1 / RATE
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def pause(self) -> int:
        self.running.clear()
        assert self.paused.wait(5)
        return self.published


class Reader(threading.Thread):
    """Reads every partition of the logs topic from its beginning and keeps the numbers."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        super().__init__(name="reader", daemon=True)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      auto_offset_reset="earliest", fetch_max_wait_ms=100)
        self.consumer.assign([TopicPartition(Topic.LOGS, p) for p in range(partitions)])
        self.numbers: list[int] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                with self._lock:
                    self.numbers += [int(r.value[:9]) for r in records]
        self.consumer.close()

    def seen(self) -> list[int]:
        with self._lock:
            return list(self.numbers)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)


def test_broker_killed_and_restarted_mid_stream_loses_no_message(tmp_path: Path) -> None:
    port = free_port()
    settings = KafkaSettings()
    broker = EmbeddedBroker(tmp_path / "tansu.log", port=port)
    broker.start()
    Bus(broker.bootstrap, settings).ensure_topics([Topic.LOGS])
    config = SpoolConfig(ack_timeout_s=2.0, connect_timeout_s=1.0, retry_backoff_s=0.2,
                         retry_backoff_max_s=1.0, close_timeout_s=2.0)
    publisher = SpoolingPublisher.for_kafka(broker.bootstrap, settings, tmp_path / "spool", config)
    publisher.counters, counts = _counting()
    publisher.start()
    pacer = Pacer(publisher)
    before = Reader(broker.bootstrap, settings.partitions)
    after: Reader | None = None
    restarted: EmbeddedBroker | None = None
    try:
        before.start()
        pacer.start()
        time.sleep(2)

        # Catch up with everything acknowledged, as the in-memory broker's data dies with it.
        published = pacer.pause()
        assert publisher.flush(10) and publisher.stats().spooled_messages == 0
        _until(lambda: len(before.seen()) >= published, 10, "consumer catching up")
        before.stop()

        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)  # from here on nothing is acknowledged
        pacer.running.set()
        time.sleep(1)
        os.kill(broker.pid, signal.SIGKILL)
        broker.shutdown()  # reaps it
        _until(lambda: publisher.stats().spooled_messages > 0, 10, "spooling")
        time.sleep(2)
        spooled_while_down = publisher.stats().spooled_messages

        restarted = EmbeddedBroker(tmp_path / "tansu.log", port=port)
        restarted.start()
        Bus(restarted.bootstrap, settings).ensure_topics([Topic.LOGS])
        after = Reader(restarted.bootstrap, settings.partitions)
        after.start()
        time.sleep(2)
        published = pacer.pause()
        pacer.stopping.set()

        reader = after
        _until(lambda: set(before.seen() + reader.seen()) >= set(range(published)), 30,
               "every message arriving")
        arrived = before.seen() + reader.seen()
        duplicates = sum(c - 1 for c in collections.Counter(arrived).values() if c > 1)
        totals = {name: count.total for name, count in counts.items()}
        print(f"\n{published} published, {len(arrived)} consumed, {duplicates} duplicates; "
              f"{spooled_while_down} spooled while the broker was down; counters {totals}")
        assert set(arrived) == set(range(published))
        first_seen: dict[int, int] = {}
        for n in arrived:
            first_seen.setdefault(n, len(first_seen))
        for key in range(KEYS):
            order = [n for n in first_seen if n % KEYS == key]
            assert order == sorted(order), f"key node-{key} arrived out of order"
        assert spooled_while_down > 0
        assert totals["dropped"] == totals["errored"] == 0
        _until(lambda: publisher.stats().spooled_messages == 0, 10, "spool emptying")
        assert counts["sent"].total >= published
    finally:
        pacer.stopping.set()
        pacer.running.set()
        publisher.shutdown()
        before.stop()
        if after is not None:
            after.stop()
        broker.shutdown()
        if restarted is not None:
            restarted.shutdown()
