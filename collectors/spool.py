"""The spool: what every collector publishes through, so Kafka trouble never blocks or loses data.

`SpoolingPublisher.publish()` only appends to a queue in memory, bounded by bytes, and
returns. A sender thread hands messages to its own Kafka producer and counts one as sent
only when Kafka acknowledged it. When Kafka does not (broker down, timeouts), what was not
acknowledged and everything queued behind it goes, in order, to the disk spool
(`spool_disk.DiskSpool`); the sender then probes Kafka with one spooled message at a time,
backing off, and once one is acknowledged replays the spool oldest first before anything
newer. Messages for one key reach Kafka in the order they were published: the producer keeps
one request in flight per broker, so a retried batch is not overtaken; memory is sent only
while the spool is empty; and sends from memory that failed go to disk ahead of everything
spooled after them. While a backlog replays, new messages wait behind it.

Delivery is at least once: a message Kafka stored but whose acknowledgement was lost is
sent again (a duplicate may then follow newer messages), and so are acknowledged records of a
segment being replayed when the process restarts. Nothing is lost unless a bound says so:
the memory queue drops its oldest messages when even the disk cannot keep up, and the disk
spool drops its oldest segment when it is full; both count in `dropped` and are logged with
how many.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError
from vigil.collectors.spool_config import DEFAULT_SPOOL_CONFIG, SpoolConfig
from vigil.collectors.spool_disk import Discard, DiskSpool, SpoolError, SpoolPosition
from vigil.collectors.spool_kafka import (
    Connecting,
    DeliveryFuture,
    Producer,
    kafka_connector,
    rejected,
)
from vigil.collectors.spool_record import Message

from vigil.bus import Bus
from vigil.settings import KafkaSettings
from vigil.telemetry import ComponentCounters
from vigil.worker import Worker

log = logging.getLogger(__name__)

_DROP_LOG_EVERY_S = 10.0
_TICK_S = 0.5  # the longest the sender sleeps with nothing to do


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Where the publisher's messages are right now."""

    queued_messages: int
    queued_bytes: int
    in_flight_messages: int
    spooled_messages: int
    spooled_bytes: int
    connected: bool  # False from a failed send until Kafka acknowledges again


@dataclass(slots=True)
class _Unreported:
    """Counts not yet added to the OpenTelemetry counters.

    `Counter.add` costs more than the rest of `publish()` together, so counts gather here
    and reach the counters once a sender round.
    """

    received: int = 0
    sent: int = 0
    dropped: int = 0
    errored: int = 0

    def report(self, counters: ComponentCounters) -> None:
        for amount, add in ((self.received, counters.add_received), (self.sent, counters.add_sent),
                            (self.dropped, counters.add_dropped),
                            (self.errored, counters.add_errored)):
            if amount:
                add(amount)


@dataclass(slots=True)
class _InFlight:
    message: Message
    index: int | None  # its publish() number, when it was sent from memory
    position: SpoolPosition | None  # where it is on disk, when it was sent from the spool
    future: DeliveryFuture | None  # None when send() itself failed
    error: BaseException | None = None


class SpoolingPublisher(Worker):
    """A `Publisher` that never blocks its caller and loses nothing while Kafka is away."""

    def __init__(
        self, connect: Callable[[], Producer], directory: Path,
        config: SpoolConfig = DEFAULT_SPOOL_CONFIG, name: str = "spool",
    ) -> None:
        super().__init__(name)
        self.config = config
        self._connect = connect
        self._from_sender = _Unreported()  # the sender thread's, like everything from _producer
        self._store = DiskSpool(directory, config.max_disk_bytes, config.segment_size,
                                self._discarded)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # flush() waits on it
        self._wake = threading.Event()
        # Guarded by _lock: what publish() touches.
        self._queue: deque[tuple[int, Message]] = deque()
        self._queued_bytes = 0
        self._published = 0  # publish() calls so far; each message's index
        self._settled_below = 0  # every message numbered below this is acked, spooled or gone
        self._dropped_unlogged = 0
        self._from_callers = _Unreported()
        self._closed = False
        # The sender thread's own.
        self._producer: Producer | None = None
        self._connecting: Connecting | None = None
        self._in_flight: deque[_InFlight] = deque()
        self._in_flight_bytes = 0
        self._unspooled: list[tuple[int, Message]] = []  # sent from memory, not acknowledged
        self._connected = True
        self._probing = False
        self._rewind = False
        self._retry_at = 0.0
        self._backoff_s = config.retry_backoff_s
        self._disk_retry_at = 0.0
        self._drops_logged_at = 0.0

    @classmethod
    def for_bus(
        cls, bus: Bus, directory: Path, config: SpoolConfig = DEFAULT_SPOOL_CONFIG,
        name: str = "spool",
    ) -> SpoolingPublisher:
        """A publisher to the Kafka that `bus` talks to, with a producer of its own."""
        return cls.for_kafka(bus.bootstrap, bus.settings, directory, config, name,
                             f"{bus.client_id}-spool")

    @classmethod
    def for_kafka(
        cls, bootstrap: str, kafka: KafkaSettings, directory: Path,
        config: SpoolConfig = DEFAULT_SPOOL_CONFIG, name: str = "spool",
        client_id: str = "vigil-spool",
    ) -> SpoolingPublisher:
        """A publisher to the Kafka at `bootstrap`, with a producer of its own."""
        connect = kafka_connector(bootstrap, kafka, config.acks, config.ack_timeout_s,
                                  config.connect_timeout_s, client_id)
        return cls(connect, directory, config, name)

    def publish(
        self, topic: str, value: bytes, key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one message and return at once; the oldest queued give way if memory is full."""
        message = Message(str(topic), value, key, tuple(headers) if headers else ())
        with self._lock:
            if self._closed:  # no sender is left to report it
                self.counters.add_received()
                self.counters.add_dropped()
                return
            self._queue.append((self._published, message))
            self._published += 1
            self._queued_bytes += message.size
            self._from_callers.received += 1
            while self._queued_bytes > self.config.max_memory_bytes and len(self._queue) > 1:
                _, oldest = self._queue.popleft()
                self._queued_bytes -= oldest.size
                self._from_callers.dropped += 1
                self._dropped_unlogged += 1
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything published so far is acknowledged or on disk (or dropped).

        False if that did not happen within `timeout_s`, or at once if no sender runs.
        """
        running = self._thread is not None and self._thread.is_alive()
        with self._lock:
            target = self._published
            self._wake.set()
            return self._settled.wait_for(lambda: self._settled_below >= target,
                                          timeout_s if running else 0.0)

    def stats(self) -> SpoolStats:
        with self._lock:
            queued, queued_bytes = len(self._queue), self._queued_bytes
        return SpoolStats(queued, queued_bytes, len(self._in_flight), self._store.messages,
                          self._store.bytes, self._connected)

    def shutdown(self) -> None:
        """Stop sending; what Kafka has not acknowledged within close_timeout_s is spooled."""
        with self._lock:
            if self._closed:
                return
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.config.close_timeout_s + 30.0)
            if self._thread.is_alive():
                log.error("spool sender did not stop; unsent messages may be lost",
                          extra={"component": self.name})
                return
        else:
            self._finish()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._wake.clear()
                self._step(time.monotonic())
                self._wake.wait(self._idle_s(time.monotonic()))
        except Exception:  # the sender must not die silently with messages in memory
            log.exception("spool sender failed", extra={"component": self.name})
            self._from_sender.errored += 1
        finally:
            self._finish()

    def _step(self, now: float) -> None:
        self._reap(now)
        if not self._connected and not self._in_flight:
            self._recover()
        self._spill(now)
        self._send(now)
        self._log_drops(now)
        self._report()
        self._update_settled()

    def _idle_s(self, now: float) -> float:
        if not self._connected and not self._in_flight:
            return max(0.0, min(_TICK_S, self._retry_at - now))
        return _TICK_S

    def _reap(self, now: float) -> None:
        """Take finished sends off the front of the in-flight queue, in the order sent."""
        while self._in_flight:
            entry = self._in_flight[0]
            if entry.future is not None:
                if not entry.future.is_done:
                    return
                entry.error = entry.future.exception
            self._in_flight.popleft()
            self._in_flight_bytes -= entry.message.size
            if entry.error is None:
                self._acknowledged(entry)
            elif rejected(entry.error):
                log.error("Kafka rejected a message; dropped",
                          extra={"component": self.name, "topic": entry.message.topic,
                                 "error": repr(entry.error)})
                self._from_sender.errored += 1
                if entry.position is not None:
                    self._store.ack(entry.position)
            else:
                self._not_acknowledged(entry, now)

    def _acknowledged(self, entry: _InFlight) -> None:
        if self._probing:
            self._probing = False
            self._connected = True
            self._backoff_s = self.config.retry_backoff_s
            log.info("Kafka acknowledges again; replaying the spool",
                     extra={"component": self.name, "spooled_messages": self._store.messages})
        if entry.position is None or self._store.ack(entry.position):
            self._from_sender.sent += 1

    def _not_acknowledged(self, entry: _InFlight, now: float) -> None:
        if self._connected:
            log.warning("Kafka did not acknowledge; spooling to disk until it does",
                        extra={"component": self.name, "error": repr(entry.error),
                               "in_flight": len(self._in_flight) + 1})
        if self._connected or self._probing:
            self._connected = self._probing = False
            self._retry_at = now + self._backoff_s
            self._backoff_s = min(2 * self._backoff_s, self.config.retry_backoff_max_s)
        if entry.index is not None:
            self._unspooled.append((entry.index, entry.message))
        else:
            self._rewind = True

    def _recover(self) -> None:
        """With nothing in flight after a failure: drop the producer, put the unacked first."""
        if self._producer is not None:
            # A new producer asks for metadata before it writes: a restarted broker may have
            # forgotten the topics, and writing to partitions from the old cache then fails.
            self._close_producer(0.0)
        if self._unspooled:
            try:
                self._store.prepend([message for _, message in self._unspooled])
            except SpoolError:
                log.exception("cannot spool unacknowledged messages; will try again",
                              extra={"component": self.name, "messages": len(self._unspooled)})
                return
            self._unspooled.clear()
            self._rewind = False  # prepend rewound
        if self._rewind:
            self._store.rewind()
            self._rewind = False

    def _spill(self, now: float) -> None:
        """Move the memory queue to disk: all of it while Kafka is away, half-full otherwise."""
        limit = 0 if not self._connected else self.config.max_memory_bytes // 2
        if now < self._disk_retry_at:
            return
        with self._lock:
            if self._queued_bytes <= limit or not self._queue:
                return
            batch = list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        try:
            self._store.append([message for _, message in batch])
        except SpoolError as exc:
            log.error("cannot write to the spool; keeping messages in memory",
                      extra={"component": self.name, "error": str(exc)})
            self._disk_retry_at = now + self.config.retry_backoff_s
            with self._lock:  # they are older than anything queued meanwhile
                for item in reversed(batch[exc.stored:]):
                    self._queue.appendleft(item)
                    self._queued_bytes += item[1].size

    def _send(self, now: float) -> None:
        count = len(self._queue) + self._store.messages
        if self._connected:
            budget = self.config.max_in_flight_bytes - self._in_flight_bytes
        elif not self._in_flight and not self._unspooled and now >= self._retry_at:
            budget, count = 1, min(count, 1)  # probe with one message
        else:
            return
        if budget <= 0 or count == 0:
            return
        if self._producer is None and not self._open_producer(now):
            return
        self._probing = not self._connected
        if self._store.messages:  # the spool goes first; memory waits until it is empty
            batch = [_InFlight(message, None, position, None)
                     for position, message in self._store.read(count, budget)]
        else:
            batch = self._take_queued(count, budget)
        error: BaseException | None = None
        for entry in batch:
            if error is None:
                error = self._send_one(entry)
            else:  # send() failed at once (each try can block connect_timeout_s): stop trying
                entry.error = error
            self._in_flight.append(entry)
            self._in_flight_bytes += entry.message.size

    def _take_queued(self, count: int, budget: int) -> list[_InFlight]:
        taken: list[_InFlight] = []
        with self._lock:
            while self._queue and len(taken) < count and budget > 0:
                index, message = self._queue.popleft()
                self._queued_bytes -= message.size
                budget -= message.size
                taken.append(_InFlight(message, index, None, None))
        return taken

    def _send_one(self, entry: _InFlight) -> BaseException | None:
        """Hand one message to the producer; the error if it refused it on the spot."""
        assert self._producer is not None
        message = entry.message
        try:
            entry.future = self._producer.send(
                message.topic, value=message.value,
                key=message.key.encode() if message.key is not None else None,
                headers=list(message.headers),
            )
        except (KafkaError, TypeError, ValueError) as exc:  # a metadata timeout, a bad topic
            entry.error = exc
            return None if rejected(exc) else exc
        entry.future.add_both(self._on_done)
        return None

    def _on_done(self, _: object) -> None:
        if not self._wake.is_set():  # called once a message: skip the Event's lock when we can
            self._wake.set()

    def _open_producer(self, now: float) -> bool:
        """True once a producer is open. Connecting can take connect_timeout_s, so it runs in
        a thread of its own and the sender goes on spilling to disk meanwhile."""
        if self._connecting is None:
            self._connecting = Connecting(self._connect, self._wake)
            return False
        if not self._connecting.done.is_set():
            return False
        attempt, self._connecting = self._connecting, None
        if attempt.producer is not None:
            self._producer = attempt.producer
            return True
        if self._connected:
            log.warning("Kafka does not answer; spooling to disk until it does",
                        extra={"component": self.name, "error": repr(attempt.error)})
        self._connected = self._probing = False
        self._retry_at = now + self._backoff_s
        self._backoff_s = min(2 * self._backoff_s, self.config.retry_backoff_max_s)
        return False

    def _close_producer(self, timeout_s: float) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except KafkaError as exc:  # close() flushes first and says so when it cannot
            log.warning("Kafka producer did not close cleanly",
                        extra={"component": self.name, "error": repr(exc)})

    def _discarded(self, why: Discard, count: int) -> None:
        if why is Discard.FULL:
            self._from_sender.dropped += count
        else:
            self._from_sender.errored += count

    def _log_drops(self, now: float) -> None:
        if now - self._drops_logged_at < _DROP_LOG_EVERY_S:
            return
        with self._lock:
            dropped, self._dropped_unlogged = self._dropped_unlogged, 0
        if dropped:
            log.warning("memory queue full; dropped the oldest messages",
                        extra={"component": self.name, "messages": dropped})
            self._drops_logged_at = now

    def _report(self) -> None:
        with self._lock:
            from_callers, self._from_callers = self._from_callers, _Unreported()
        from_sender, self._from_sender = self._from_sender, _Unreported()
        from_callers.report(self.counters)
        from_sender.report(self.counters)

    def _update_settled(self) -> None:
        """Note the oldest message still only in memory or in flight, for flush()."""
        oldest = [self._unspooled[0][0]] if self._unspooled else []
        # Memory is sent only while the spool is empty, so its messages lead the in-flight queue.
        if self._in_flight and self._in_flight[0].index is not None:
            oldest.append(self._in_flight[0].index)
        with self._lock:
            if self._queue:
                oldest.append(self._queue[0][0])
            self._settled_below = min(oldest, default=self._published)
            self._settled.notify_all()

    def _finish(self) -> None:
        """Give in-flight sends a moment, then put everything not acknowledged on disk."""
        deadline = time.monotonic() + self.config.close_timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._wake.clear()
            self._reap(time.monotonic())
            if self._in_flight:
                self._wake.wait(0.05)
        with self._lock:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        older = self._unspooled + [(e.index, e.message) for e in self._in_flight
                                   if e.index is not None]
        unsent = len(older) + len(queued)
        lost = 0
        try:
            self._store.prepend([message for _, message in older])
        except SpoolError:
            lost += len(older)
        try:
            self._store.append([message for _, message in queued])
        except SpoolError as exc:
            lost += len(queued) - exc.stored
        if lost:
            log.error("cannot spool unsent messages at shutdown; they are lost",
                      extra={"component": self.name, "messages": lost})
            self._from_sender.dropped += lost
        self._unspooled.clear()
        self._in_flight.clear()
        self._close_producer(0.0)  # whatever it still holds is on disk now
        if self._connecting is not None:
            self._connecting.abandon(self.config.connect_timeout_s + 1.0)
            self._connecting = None
        try:
            self._store.close()
        finally:
            self._report()
            self._update_settled()
        log.info("spool stopped", extra={"component": self.name, "spooled_messages":
                                         self._store.messages, "unsent_at_stop": unsent})
