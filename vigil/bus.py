"""The Kafka bus: topics, a shared batching producer, consumers tuned by settings, dead letters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from vigil.settings import KafkaSettings

log = logging.getLogger(__name__)


class Topic(StrEnum):
    METRICS = "vigil.metrics"
    LOGS = "vigil.logs"
    EVENTS = "vigil.events"
    INVENTORY = "vigil.inventory"
    ALERTS = "vigil.alerts"
    INCIDENTS = "vigil.incidents"
    ACTIONS = "vigil.actions"
    DEADLETTER = "vigil.deadletter"


# Header names on dead letters; the value is the original message, byte for byte.
DL_REASON = "vigil.reason"
DL_STAGE = "vigil.stage"
DL_SOURCE = "vigil.source"  # "topic/partition/offset"


class BusError(RuntimeError):
    """Kafka could not be reached or refused a request at start-up."""


class Bus:
    """One process's connection to Kafka: creates topics, publishes, hands out consumers."""

    def __init__(self, bootstrap: str, settings: KafkaSettings, client_id: str = "vigil") -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.client_id = client_id
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def ensure_topics(self, topics: Sequence[str] = tuple(Topic), timeout_s: float = 30.0) -> None:
        """Create any of `topics` that do not exist yet, waiting up to `timeout_s` for Kafka."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
                break
            except KafkaError as exc:  # kafka-python names "no broker" differently by version
                if time.monotonic() > deadline:
                    raise BusError(f"no Kafka broker answers at {self.bootstrap}: {exc}") from None
                time.sleep(0.5)
        try:
            missing = sorted(set(topics) - set(admin.list_topics()))
            for name in missing:
                try:
                    admin.create_topics([NewTopic(name, self.settings.partitions, 1)])
                    log.info("topic created", extra={"topic": name})
                except TopicAlreadyExistsError:
                    pass  # another process won the race
        except KafkaError as exc:
            raise BusError(f"cannot create topics on {self.bootstrap}: {exc}") from exc
        finally:
            admin.close()

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=self.client_id,
                    acks=1,
                    enable_idempotence=self.settings.idempotence,
                    linger_ms=self.settings.linger_ms,
                    max_request_size=16 * 1024 * 1024,
                )
            return self._producer

    def publish(
        self, topic: str, value: bytes, key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one message; the producer batches and sends it in the background."""
        self.producer.send(
            topic, value=value, key=key.encode() if key is not None else None,
            headers=headers or [],
        )

    def dead_letter(self, message: Any, reason: str, stage: str) -> None:
        """Publish `message` (a ConsumerRecord) unchanged to the dead-letter topic, with why."""
        source = f"{message.topic}/{message.partition}/{message.offset}"
        log.warning("dead-lettered message", extra={"stage": stage, "source": source,
                                                    "reason": reason})
        self.producer.send(
            Topic.DEADLETTER, value=message.value if message.value is not None else b"",
            key=message.key,
            headers=[(DL_REASON, reason.encode()), (DL_STAGE, stage.encode()),
                     (DL_SOURCE, source.encode())],
        )

    def consumer(self, group: str, topics: Sequence[str]) -> KafkaConsumer:
        s = self.settings
        return KafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-{group}",
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=1000,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            max_poll_records=s.max_poll_records,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )

    def flush(self, timeout_s: float = 10.0) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
