"""The spool's side of Kafka: the producer it sends with, how one is opened, what is retried.

The spool needs little of `kafka.KafkaProducer`, and says so in two protocols, so tests can
put a producer of their own in its place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal, Protocol

from kafka import KafkaProducer
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from vigil.settings import KafkaSettings

Acks = Literal[1, "all"]

# Kafka refused the message itself: sending it again cannot help.
_REJECTED = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError,
             CorruptRecordError, InvalidRecordError, TypeError, ValueError)


def rejected(error: BaseException) -> bool:
    """Whether `error` condemns the message rather than the connection (which is retried)."""
    return isinstance(error, _REJECTED)


class DeliveryFuture(Protocol):
    """What a producer's `send` returns (kafka-python's `FutureRecordMetadata`)."""

    is_done: bool
    exception: BaseException | None

    def add_both(self, f: Callable[[Any], object]) -> object: ...


class Producer(Protocol):
    """The part of `kafka.KafkaProducer` the spool uses."""

    def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]],
    ) -> DeliveryFuture: ...

    def close(self, timeout: float) -> None: ...


def kafka_connector(
    bootstrap: str, kafka: KafkaSettings, acks: Acks, ack_timeout_s: float,
    connect_timeout_s: float, client_id: str = "vigil-spool",
) -> Callable[[], Producer]:
    """A function that opens a producer on `bootstrap`, raising KafkaError if none answers.

    A send that Kafka has not acknowledged within `ack_timeout_s` fails; opening a producer,
    or waiting for a topic's metadata, gives up after `connect_timeout_s`.
    """
    if kafka.idempotence and acks != "all":
        raise ValueError("an idempotent producer needs acks='all' (kafka.idempotence is on)")
    linger_ms = kafka.linger_ms
    ack_timeout_ms = max(int(ack_timeout_s * 1000), linger_ms + 1)
    connect_timeout_ms = int(connect_timeout_s * 1000)

    def connect() -> Producer:
        producer: Producer = KafkaProducer(
            bootstrap_servers=bootstrap, client_id=client_id, acks=acks,
            enable_idempotence=kafka.idempotence, linger_ms=linger_ms,
            # One request at a time per broker: retries then cannot overtake earlier batches.
            max_in_flight_requests_per_connection=1,
            batch_size=1024 * 1024, max_request_size=16 * 1024 * 1024,
            # Short waits, so a dead broker turns into failed futures instead of a stuck thread.
            bootstrap_timeout_ms=connect_timeout_ms, max_block_ms=connect_timeout_ms,
            request_timeout_ms=ack_timeout_ms - linger_ms, delivery_timeout_ms=ack_timeout_ms,
            reconnect_backoff_max_ms=1000,
        )
        return producer

    return connect


class Connecting:
    """One attempt to open a producer, in a thread of its own; wakes the sender when done."""

    def __init__(self, connect: Callable[[], Producer], wake: threading.Event) -> None:
        self.producer: Producer | None = None
        self.error: Exception | None = None
        self.done = threading.Event()
        self._connect = connect
        self._wake = wake
        self._thread = threading.Thread(target=self._run, name="spool-connect", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.producer = self._connect()
        except Exception as exc:  # no broker, or one we cannot talk to: the sender retries
            self.error = exc
        finally:
            self.done.set()
            self._wake.set()

    def abandon(self, timeout_s: float) -> None:
        """Wait for the attempt to end and close what it opened."""
        self._thread.join(timeout_s)
        if self.producer is not None:
            self.producer.close(timeout=0.0)
