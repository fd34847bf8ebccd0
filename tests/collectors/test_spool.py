"""Tests for the spool: its record, its disk store, and the publisher before a flaky Kafka."""

from __future__ import annotations

import dataclasses
import logging
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_fakes import Tally
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future
from vigil.collectors.spool import SpoolingPublisher
from vigil.collectors.spool_config import SpoolConfig
from vigil.collectors.spool_disk import Discard, DiskSpool, SpoolError
from vigil.collectors.spool_kafka import kafka_connector
from vigil.collectors.spool_record import Message, decode_payload, encode_frame

from vigil.bus import Bus, Topic
from vigil.settings import KafkaSettings

SEGMENT = 4096


def _message(n: int, size: int = 100) -> Message:
    return Message("vigil.logs", f"{n:08d}".encode().ljust(size, b"."), key=f"node-{n % 3}",
                   headers=(("vigil.n", str(n).encode()),))


def _number(message: Message) -> int:
    return int(message.value[:8])


class Discards:
    """Records what a DiskSpool gave up, by reason."""

    def __init__(self) -> None:
        self.counts = {why: 0 for why in Discard}

    def __call__(self, why: Discard, count: int) -> None:
        self.counts[why] += count


@pytest.fixture
def discards() -> Discards:
    return Discards()


@pytest.fixture
def open_store(tmp_path: Path, discards: Discards) -> Iterator[Callable[..., DiskSpool]]:
    opened: list[DiskSpool] = []

    def open_(max_bytes: int = 64 * SEGMENT, segment_bytes: int = SEGMENT) -> DiskSpool:
        store = DiskSpool(tmp_path / "spool", max_bytes, segment_bytes, discards)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()  # closing twice is harmless


def _read_all(store: DiskSpool) -> list[Message]:
    return [message for _, message in store.read(10**6, 10**9)]


# -- the disk store ---------------------------------------------------------------------------


def test_frame_round_trips_every_field() -> None:
    for message in [Message("t", b""), Message("vigil.metrics", b"\x00\xff" * 50, "node-1",
                                                  (("a", b""), ("b", b"\x01")))]:
        frame = encode_frame(message)
        assert decode_payload(frame[8:]) == message


def test_reads_back_in_order_across_segments_and_deletes_acked_segments(
    open_store: Callable[..., DiskSpool], tmp_path: Path,
) -> None:
    store = open_store()
    messages = [_message(n) for n in range(200)]
    store.append(messages[:120])
    store.append(messages[120:])
    assert store.messages == 200
    assert len(list((tmp_path / "spool").glob("*.seg"))) > 3  # it rolled into segments
    read = store.read(10**6, 10**9)
    assert [m for _, m in read] == messages
    assert store.read(10, 10**9) == []  # everything is handed out
    for position, _ in read:
        assert store.ack(position)
    assert not store.ack(read[0][0])  # a second ack is refused
    assert store.messages == 0 and store.bytes == 0
    assert list((tmp_path / "spool").glob("*.seg")) == []


def test_read_stops_at_the_byte_budget_but_returns_at_least_one(
    open_store: Callable[..., DiskSpool],
) -> None:
    store = open_store()
    store.append([_message(n, size=1000) for n in range(10)])
    size = _message(0, size=1000).size
    assert len(store.read(100, 1)) == 1
    assert len(store.read(100, 2 * size + 1)) == 3  # it stops once the budget is reached
    assert len(store.read(2, 10**9)) == 2


def test_rewind_rereads_only_what_was_not_acked(open_store: Callable[..., DiskSpool]) -> None:
    store = open_store()
    store.append([_message(n) for n in range(10)])
    read = store.read(6, 10**9)
    for position, _ in read[1::2]:  # 1, 3, 5 out of order and past a gap
        store.ack(position)
    store.rewind()
    assert [_number(m) for m in _read_all(store)] == [0, 2, 4, 6, 7, 8, 9]
    assert store.messages == 7


def test_prepend_puts_messages_before_everything(open_store: Callable[..., DiskSpool]) -> None:
    store = open_store()
    store.append([_message(n) for n in range(10, 20)])
    first = store.read(3, 10**9)
    store.prepend([_message(n) for n in range(10)])
    assert [_number(m) for m in _read_all(store)] == list(range(20))  # and it rewound
    store.append([_message(20)])
    assert [_number(m) for m in _read_all(store)] == [20]
    assert store.ack(first[0][0])
    assert store.messages == 20


def test_full_store_drops_its_oldest_segment_and_counts_its_messages(
    open_store: Callable[..., DiskSpool], discards: Discards,
) -> None:
    store = open_store(max_bytes=4 * SEGMENT)
    store.append([_message(n) for n in range(500)])
    assert store.bytes <= 4 * SEGMENT
    kept = [_number(m) for m in _read_all(store)]
    assert kept == list(range(500 - len(kept), 500))  # the newest, in order, nothing in between
    assert discards.counts[Discard.FULL] == 500 - len(kept) > 0
    assert store.messages == len(kept)


def test_dropping_a_segment_with_messages_in_flight_counts_only_the_unacked(
    open_store: Callable[..., DiskSpool], discards: Discards,
) -> None:
    store = open_store(max_bytes=2 * SEGMENT)
    store.append([_message(n) for n in range(30)])  # about one segment
    read = store.read(10, 10**9)
    store.ack(read[0][0])
    store.append([_message(n) for n in range(30, 200)])
    assert not store.ack(read[1][0])  # its segment is gone: counted dropped, not sent
    assert discards.counts[Discard.FULL] + store.messages == 199


def test_oversized_message_is_dropped_not_stored(
    open_store: Callable[..., DiskSpool], discards: Discards,
) -> None:
    store = open_store(max_bytes=2 * SEGMENT)
    store.append([_message(1), _message(2, size=3 * SEGMENT), _message(3)])
    assert [_number(m) for m in _read_all(store)] == [1, 3]
    assert discards.counts[Discard.FULL] == 1


def test_reopening_replays_what_was_not_acked(open_store: Callable[..., DiskSpool]) -> None:
    store = open_store()
    store.append([_message(n) for n in range(100)])
    read = store.read(100, 10**9)
    for position, _ in read[:60]:
        store.ack(position)
    store.close()
    again = open_store()
    numbers = [_number(m) for m in _read_all(again)]
    # Acked records of a segment still on disk come back (at least once); the rest is exact.
    assert numbers == sorted(set(numbers)) and numbers[-40:] == list(range(60, 100))
    assert numbers[0] > 0  # fully acked segments were deleted
    assert again.messages == len(numbers)


def test_a_torn_last_record_is_cut_off_with_a_log_line(
    open_store: Callable[..., DiskSpool], discards: Discards, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_store()
    store.append([_message(n) for n in range(5)])
    store.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    whole = segment.stat().st_size
    with segment.open("ab") as out:  # a crash in the middle of writing the sixth
        out.write(encode_frame(_message(5))[:50])
    with caplog.at_level(logging.WARNING):
        again = open_store()
    assert "torn record" in caplog.text
    assert segment.stat().st_size == whole
    assert discards.counts[Discard.CORRUPT] == 1
    again.append([_message(6)])  # appends after the cut read back whole
    assert [_number(m) for m in _read_all(again)] == [0, 1, 2, 3, 4, 6]


def test_a_record_failing_its_crc_is_cut_off(
    open_store: Callable[..., DiskSpool], discards: Discards, tmp_path: Path,
) -> None:
    store = open_store()
    store.append([_message(n) for n in range(5)])
    store.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    frame = len(encode_frame(_message(0)))
    data = bytearray(segment.read_bytes())
    data[4 * frame + 40] ^= 0xFF  # flip a byte inside the last record's value
    segment.write_bytes(bytes(data))
    assert [_number(m) for m in _read_all(open_store())] == [0, 1, 2, 3]
    assert discards.counts[Discard.CORRUPT] == 1


def test_damage_found_while_reading_skips_the_rest_of_that_segment_only(
    open_store: Callable[..., DiskSpool], discards: Discards, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_store()
    store.append([_message(n) for n in range(30)])  # two segments
    first = min((tmp_path / "spool").glob("*.seg"))
    frame = len(encode_frame(_message(0)))
    with first.open("r+b") as damaged:
        damaged.seek(5 * frame + 40)
        damaged.write(b"\xff")
    with caplog.at_level(logging.ERROR):
        numbers = [_number(m) for m in _read_all(store)]
    assert "unreadable record" in caplog.text
    lost = discards.counts[Discard.CORRUPT]
    assert numbers == [0, 1, 2, 3, 4, *range(5 + lost, 30)] and lost > 0
    assert store.messages == len(numbers)


def test_a_second_process_cannot_share_the_directory(
    open_store: Callable[..., DiskSpool],
) -> None:
    open_store()
    with pytest.raises(SpoolError, match="in use"):
        open_store()


def test_a_failed_write_leaves_only_whole_records(
    open_store: Callable[..., DiskSpool], tmp_path: Path,
) -> None:
    """The file-size limit makes the kernel refuse writes past 600 KiB, like a full disk."""
    store = open_store(max_bytes=4 * 1024 * 1024, segment_bytes=1024 * 1024)
    messages = [_message(n, size=1000) for n in range(600)]
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (600 * 1024, hard))
    try:
        with pytest.raises(SpoolError) as failed:
            store.append(messages)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    stored = failed.value.stored
    assert 0 < stored < 600
    assert store.messages == stored
    store.append(messages[stored:])  # the caller retries the rest
    store.close()
    assert _read_all(open_store(max_bytes=4 * 1024 * 1024, segment_bytes=1024 * 1024)) == messages


# -- the publisher ----------------------------------------------------------------------------


class FakeKafka:
    """Stands in for Kafka behind `connect()`: up (acks at once), down, or holding acks."""

    def __init__(self) -> None:
        self.state = "up"
        self.delivered: list[Message] = []
        self.held: list[tuple[Future, Message]] = []
        self.rejected_topic = "too.large"
        self.connects = 0
        self.sends = 0
        self.connected = threading.Event()  # cleared to make connect() block
        self.connected.set()
        self.connecting = threading.Event()  # set once connect() is called
        self._lock = threading.Lock()

    def connect(self) -> FakeProducer:
        self.connecting.set()
        self.connected.wait()
        with self._lock:
            self.connects += 1
            if self.state == "down":
                raise KafkaTimeoutError("Unable to bootstrap from fake:9092")
        return FakeProducer(self)

    def accept(self, message: Message) -> Future:
        future = Future()
        with self._lock:
            self.sends += 1
            if self.state == "no metadata":  # send() itself times out waiting for the topic
                raise KafkaTimeoutError("Failed to update metadata after 2.0 secs.")
            if message.topic == self.rejected_topic:
                return future.failure(MessageSizeTooLargeError("too large"))
            if self.state == "down":
                return future.failure(KafkaConnectionError("connection refused"))
            if self.state == "hold":
                self.held.append((future, message))
                return future
            self.delivered.append(message)
        return future.success(None)

    def release(self, acknowledge: bool) -> None:
        with self._lock:
            held, self.held = self.held, []
            if acknowledge:
                self.delivered += [message for _, message in held]
        for future, _ in held:
            if acknowledge:
                future.success(None)
            else:
                future.failure(KafkaTimeoutError("Expiring 1 record(s)"))

    def numbers(self) -> list[int]:
        with self._lock:
            return [_number(m) for m in self.delivered]


class FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.closed = False

    def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]],
    ) -> Future:
        assert not self.closed
        return self.kafka.accept(Message(topic, value, key.decode() if key else None,
                                         tuple(headers)))

    def close(self, timeout: float) -> None:
        self.closed = True


CONFIG = SpoolConfig(max_memory_bytes=1024 * 1024, max_disk_bytes=4 * 1024 * 1024,
                     segment_bytes=16 * 1024, max_in_flight_bytes=8 * 1024,
                     retry_backoff_s=0.01, retry_backoff_max_s=0.05, close_timeout_s=1.0)
SMALL_MEMORY = dataclasses.replace(CONFIG, max_memory_bytes=64 * 1024)


def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def make_publisher(
    kafka: FakeKafka, tally: Tally, tmp_path: Path,
) -> Iterator[Callable[..., SpoolingPublisher]]:
    made: list[SpoolingPublisher] = []

    def make(config: SpoolConfig = CONFIG, start: bool = True) -> SpoolingPublisher:
        publisher = SpoolingPublisher(kafka.connect, tmp_path / "spool", config)
        publisher.counters = tally.component
        made.append(publisher)
        if start:
            publisher.start()
        return publisher

    yield make
    kafka.connected.set()
    for publisher in made:
        publisher.shutdown()


def _publish(publisher: SpoolingPublisher, numbers: range, size: int = 100) -> None:
    for n in numbers:
        message = _message(n, size)
        publisher.publish(message.topic, message.value, message.key, list(message.headers))


def _first_arrivals_in_order(numbers: list[int]) -> bool:
    """Per key, each number's first arrival comes after the first arrivals of smaller ones."""
    seen: set[int] = set()
    last = {key: -1 for key in range(3)}
    for n in numbers:
        if n in seen:
            continue
        seen.add(n)
        if n < last[n % 3]:
            return False
        last[n % 3] = n
    return True


def test_delivers_everything_in_order_while_kafka_is_up(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    publisher = make_publisher()
    _publish(publisher, range(1000))
    assert publisher.flush(5)
    assert kafka.numbers() == list(range(1000))
    assert kafka.delivered[7] == _message(7)  # key and headers travel
    assert tally.totals() == {"received": 1000, "sent": 1000, "dropped": 0, "errored": 0}
    stats = publisher.stats()
    assert (stats.queued_messages, stats.in_flight_messages, stats.spooled_messages) == (0, 0, 0)


def test_spools_while_kafka_is_down_and_replays_when_it_returns(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    kafka.state = "down"
    publisher = make_publisher()
    _publish(publisher, range(500))
    assert publisher.flush(5)  # flushed means: on disk
    stats = publisher.stats()
    assert stats.spooled_messages == 500 and stats.spooled_bytes > 500 * 100
    assert not stats.connected and kafka.delivered == []
    kafka.state = "up"
    _until(lambda: len(kafka.delivered) == 500)
    _publish(publisher, range(500, 600))
    assert publisher.flush(5)
    _until(lambda: len(kafka.delivered) == 600)
    assert kafka.numbers() == list(range(600))
    assert publisher.stats().spooled_messages == 0 and publisher.stats().connected
    assert tally.totals() == {"received": 600, "sent": 600, "dropped": 0, "errored": 0}


def test_kafka_failing_mid_stream_loses_nothing_and_keeps_key_order(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    publisher = make_publisher()
    _publish(publisher, range(200))
    assert publisher.flush(5)
    kafka.state = "down"
    _publish(publisher, range(200, 400))
    _until(lambda: publisher.stats().spooled_messages > 0)
    kafka.state = "up"
    _publish(publisher, range(400, 600))
    _until(lambda: set(kafka.numbers()) == set(range(600)))
    assert _first_arrivals_in_order(kafka.numbers())
    _until(lambda: tally.totals()["sent"] >= 600)
    totals = tally.totals()
    assert totals["dropped"] == totals["errored"] == 0


def test_unacknowledged_sends_from_memory_go_before_newer_spooled_messages(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    kafka.state = "hold"
    publisher = make_publisher(SMALL_MEMORY)
    _publish(publisher, range(40))  # in flight (as many as max_in_flight_bytes allow), held
    _until(lambda: len(kafka.held) > 0)
    _publish(publisher, range(40, 100))  # past half the memory bound: spilled to disk
    _until(lambda: publisher.stats().spooled_messages > 0)
    _publish(publisher, range(100, 150))  # and some in memory behind those
    # Like a broker, acknowledge nothing newer while older sends are pending: time them out
    # first, and come back only once the publisher saw it.
    kafka.state = "down"
    kafka.release(acknowledge=False)
    _until(lambda: not publisher.stats().connected)
    kafka.state = "up"
    _until(lambda: tally.totals()["sent"] == 150)  # counted once acknowledged, after delivery
    assert kafka.numbers() == list(range(150))
    assert tally.totals() == {"received": 150, "sent": 150, "dropped": 0, "errored": 0}


def test_publish_never_blocks_and_a_full_memory_queue_drops_its_oldest(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    publisher = make_publisher(SMALL_MEMORY, start=False)  # nothing moves the queue yet
    started = time.monotonic()
    _publish(publisher, range(2000))  # about 4 times the memory bound
    assert time.monotonic() - started < 2.0
    stats = publisher.stats()
    assert SMALL_MEMORY.max_memory_bytes - 500 < stats.queued_bytes <= SMALL_MEMORY.max_memory_bytes
    publisher.start()
    _until(lambda: len(kafka.delivered) == stats.queued_messages)
    assert kafka.numbers() == list(range(2000 - stats.queued_messages, 2000))  # the newest
    assert publisher.flush(5)  # counts reach the counters once a sender round
    assert tally.totals()["dropped"] == 2000 - stats.queued_messages > 0


def test_messages_the_disk_refuses_wait_in_memory_until_it_takes_them(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    """The file-size limit makes the kernel refuse every spool write, like a full disk."""
    kafka.state = "down"
    publisher = make_publisher()
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        _publish(publisher, range(300))
        assert not publisher.flush(0.3)  # not acknowledged, not on disk
        assert publisher.stats().spooled_messages == 0
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert publisher.flush(5)
    assert publisher.stats().spooled_messages == 300
    kafka.state = "up"
    _until(lambda: tally.totals()["sent"] == 300)
    assert kafka.numbers() == list(range(300))
    assert tally.totals()["dropped"] == 0


def test_a_full_disk_spool_drops_its_oldest_segments_with_the_count(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    kafka.state = "down"
    publisher = make_publisher(dataclasses.replace(CONFIG, max_disk_bytes=64 * 1024))
    for start in range(0, 3000, 100):  # paced so the sender spools rather than memory drops
        _publish(publisher, range(start, start + 100))
        assert publisher.flush(5)
    assert publisher.stats().spooled_bytes <= 64 * 1024
    kafka.state = "up"
    dropped = int(tally.totals()["dropped"])
    assert dropped > 0
    _until(lambda: tally.totals()["sent"] == 3000 - dropped)
    assert kafka.numbers() == list(range(dropped, 3000))


def test_a_send_that_fails_at_once_is_not_repeated_for_the_rest_of_its_batch(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    kafka.state = "no metadata"
    publisher = make_publisher()
    _publish(publisher, range(40))  # one batch within max_in_flight_bytes
    assert publisher.flush(5)
    assert kafka.sends < 20  # the first send, then single probes; not 40 blocking tries
    kafka.state = "up"
    _until(lambda: tally.totals()["sent"] == 40)
    assert kafka.numbers() == list(range(40))


def test_kafka_rejecting_a_message_counts_it_errored_and_goes_on(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tally: Tally,
) -> None:
    publisher = make_publisher()
    _publish(publisher, range(3))
    publisher.publish(kafka.rejected_topic, b"x" * 10)
    _publish(publisher, range(3, 6))
    assert publisher.flush(5)
    assert kafka.numbers() == list(range(6))
    assert tally.totals() == {"received": 7, "sent": 6, "dropped": 0, "errored": 1}


def test_shutdown_spools_what_is_unsent_and_a_restart_replays_it_first(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka,
) -> None:
    kafka.state = "hold"
    first = make_publisher(dataclasses.replace(CONFIG, close_timeout_s=0.2))
    _publish(first, range(300))
    _until(lambda: len(kafka.held) > 0)
    first.shutdown()  # held sends never finish: spooled after close_timeout_s
    first.publish("vigil.logs", b"late")  # after shutdown: counted dropped, not queued
    kafka.held.clear()
    kafka.state = "up"
    second = make_publisher()
    _publish(second, range(300, 400))
    _until(lambda: len(kafka.delivered) == 400)
    assert kafka.numbers() == list(range(400))


def test_shutdown_without_start_spools_the_queue(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka,
) -> None:
    never_started = make_publisher(start=False)
    _publish(never_started, range(20))
    assert not never_started.flush(5)  # returns at once: nothing sends
    never_started.shutdown()
    assert never_started.stats().spooled_messages == 20
    replaying = make_publisher()
    _until(lambda: len(kafka.delivered) == 20)
    assert replaying.stats().spooled_messages == 0


def test_an_idempotent_producer_without_acks_all_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="idempotent"):
        kafka_connector("127.0.0.1:9", KafkaSettings(idempotence=True), 1, 10.0, 2.0)


def test_built_for_a_bus_it_touches_no_kafka_until_started(tmp_path: Path) -> None:
    bus = Bus("127.0.0.1:9", KafkaSettings(), client_id="collectors")
    publisher = SpoolingPublisher.for_bus(bus, tmp_path / "spool", CONFIG)
    publisher.publish(Topic.METRICS, b"kept")
    publisher.shutdown()
    assert publisher.stats().spooled_messages == 1


def test_config_is_checked_whole() -> None:
    with pytest.raises(ValueError, match=r"max_memory_bytes.*max_disk_bytes"):
        SpoolConfig(max_memory_bytes=0, max_disk_bytes=10, segment_bytes=10)


def test_segments_follow_the_disk_bound_unless_set() -> None:
    assert SpoolConfig().segment_size == 16 * 1024 * 1024
    assert SpoolConfig(max_disk_bytes=1024 * 1024).segment_size == 128 * 1024
    assert SpoolConfig(segment_bytes=4096).segment_size == 4096


def test_sender_sleeps_when_idle(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka,
) -> None:
    kafka.state = "down"
    publisher = make_publisher()
    _publish(publisher, range(5))
    assert publisher.flush(5)
    connects = kafka.connects
    cpu = time.process_time()
    time.sleep(0.3)
    assert kafka.connects - connects < 10  # backing off to retry_backoff_max_s, not spinning
    assert time.process_time() - cpu < 0.2


def test_a_crashed_process_loses_nothing_it_spooled_and_a_restart_replays_it(
    make_publisher: Callable[..., SpoolingPublisher], kafka: FakeKafka, tmp_path: Path,
) -> None:
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from kafka.errors import KafkaTimeoutError
        from vigil.collectors.spool import SpoolingPublisher

        def unreachable():
            raise KafkaTimeoutError("Unable to bootstrap")

        publisher = SpoolingPublisher(unreachable, Path({str(tmp_path / 'spool')!r}))
        publisher.start()
        for n in range(1000):
            publisher.publish("vigil.logs", str(n).encode(), key=f"node-{{n % 3}}")
        assert publisher.flush(10)
        os.kill(os.getpid(), 9)  # no shutdown, no close
    """)
    done = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert done.returncode == -signal.SIGKILL
    make_publisher()
    _until(lambda: len(kafka.delivered) == 1000)
    assert [int(m.value) for m in kafka.delivered] == list(range(1000))
