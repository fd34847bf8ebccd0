"""How fast messages go through the spool: to a live broker, onto disk, and back off it.

Starts the embedded Tansu broker on loopback and measures, in one run:

- disk: the segment store alone, appending N messages in batches (then fsync on close),
  scanning them on open, and reading and acknowledging them back (the replay read path);
- live: N messages of SIZE bytes published through `SpoolingPublisher` as fast as a caller
  can (memory bound large enough that nothing needs the disk), timed until Kafka
  acknowledged every one, next to the same messages through the plain `Bus` producer;
- replay: N messages spooled while no broker answers, then timed from the broker's return
  until Kafka acknowledged all of them;
- burst: N messages published as fast as a caller can while no broker answers, with the
  default bounds: how fast the sender moves them to disk and how many the memory bound
  dropped because the disk could not keep up.

Counters are read through the OpenTelemetry SDK, as Vigil's own metrics are. Prints
figures; asserts nothing.

    .venv/bin/python bench/spool.py --messages 100000 --size 4096 [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from figures import print_figures  # bench/, this script's own folder
from opentelemetry.metrics import set_meter_provider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from vigil.collectors.spool import SpoolingPublisher
from vigil.collectors.spool_config import SpoolConfig
from vigil.collectors.spool_disk import DiskSpool
from vigil.collectors.spool_record import Message

from vigil.broker import EmbeddedBroker, free_port
from vigil.bus import Bus, Topic
from vigil.settings import KafkaSettings

MB = 1e6
READER = InMemoryMetricReader()


def _counted(component: str, counter: str) -> float:
    """The total of vigil_component_<counter> for one component, from the SDK."""
    data = READER.get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == f"vigil_component_{counter}":
                    total += sum(float(point.value) for point in metric.data.data_points
                                 if point.attributes.get("component") == component)
    return total


def _wait_acked(component: str, count: int, spooled: Callable[[], int]) -> tuple[float, int]:
    """Seconds until `count` messages are acknowledged or given up; the most spooled meanwhile."""
    t0 = time.monotonic()
    most = 0
    while sum(_counted(component, c) for c in ("sent", "dropped", "errored")) < count:
        most = max(most, spooled())
        time.sleep(0.02)
    return time.monotonic() - t0, most


def _messages(count: int, size: int) -> list[Message]:
    body = b"x" * size
    return [Message(Topic.LOGS, body, f"node-{n % 64:03d}") for n in range(count)]


def _publish_all(publisher: SpoolingPublisher | Bus, messages: list[Message]) -> float:
    t0 = time.monotonic()
    for m in messages:
        publisher.publish(m.topic, m.value, key=m.key)
    return time.monotonic() - t0


def live(bootstrap: str, folder: Path, messages: list[Message]) -> dict[str, float]:
    settings = KafkaSettings()
    volume = _volume(messages)
    bus = Bus(bootstrap, settings, client_id="bench-bus")
    t0 = time.monotonic()
    _publish_all(bus, messages)
    bus.flush(timeout_s=600)
    bus_s = time.monotonic() - t0
    bus.close()

    config = SpoolConfig(max_memory_bytes=int(2.5 * volume * MB))
    publisher = SpoolingPublisher.for_kafka(bootstrap, settings, folder / "live", config,
                                            name="bench-live")
    publisher.start()
    t0 = time.monotonic()
    calls_s = _publish_all(publisher, messages)
    _, most = _wait_acked("bench-live", len(messages), lambda: publisher.stats().spooled_messages)
    spool_s = time.monotonic() - t0
    publisher.shutdown()
    return {
        "live_spool_msgs_per_s": round(len(messages) / spool_s),
        "live_spool_mb_per_s": round(volume / spool_s, 1),
        "live_spool_publish_calls_per_s": round(len(messages) / calls_s),
        "live_spool_most_spooled_messages": most,
        "live_spool_dropped": _counted("bench-live", "dropped"),
        "live_bus_msgs_per_s": round(len(messages) / bus_s),
        "live_bus_mb_per_s": round(volume / bus_s, 1),
        "live_spool_to_bus_ratio": round(bus_s / spool_s, 2),
    }


def disk(folder: Path, messages: list[Message]) -> dict[str, float]:
    volume = _volume(messages)
    size = max(int(2.5 * volume * MB), 64 * 1024 * 1024)
    store = DiskSpool(folder / "disk", size, 16 * 1024 * 1024)
    t0 = time.monotonic()
    for start in range(0, len(messages), 1000):
        store.append(messages[start:start + 1000])
    append_s = time.monotonic() - t0
    store.close()
    close_s = time.monotonic() - t0
    t0 = time.monotonic()
    store = DiskSpool(folder / "disk", size, 16 * 1024 * 1024)
    open_s = time.monotonic() - t0
    t0 = time.monotonic()
    replayed = 0
    while batch := store.read(1000, 8 * 1024 * 1024):
        for position, _ in batch:
            store.ack(position)
        replayed += len(batch)
    replay_s = time.monotonic() - t0
    store.close()
    return {
        "disk_append_msgs_per_s": round(len(messages) / append_s),
        "disk_append_mb_per_s": round(volume / append_s, 1),
        "disk_append_with_fsync_mb_per_s": round(volume / close_s, 1),
        "disk_open_scan_mb_per_s": round(volume / open_s, 1),
        "disk_replay_read_msgs_per_s": round(replayed / replay_s),
        "disk_replay_read_mb_per_s": round(volume * replayed / len(messages) / replay_s, 1),
    }


def _offline(folder: Path, name: str, config: SpoolConfig) -> tuple[SpoolingPublisher, int]:
    """A started publisher whose broker is not there (yet): a free port nobody listens on."""
    port = free_port()
    publisher = SpoolingPublisher.for_kafka(f"127.0.0.1:{port}", KafkaSettings(), folder / name,
                                            config, name=f"bench-{name}")
    publisher.start()
    return publisher, port


def replay(folder: Path, messages: list[Message]) -> dict[str, float]:
    volume = _volume(messages)
    config = SpoolConfig(max_memory_bytes=int(2.5 * volume * MB),
                         max_disk_bytes=int(2.5 * volume * MB) + 64 * 1024 * 1024,
                         retry_backoff_s=0.1, retry_backoff_max_s=0.2, connect_timeout_s=0.5)
    publisher, port = _offline(folder, "replay", config)
    _publish_all(publisher, messages)
    while not publisher.flush(60):  # everything is on disk
        pass
    spooled = publisher.stats().spooled_messages
    broker = EmbeddedBroker(folder / "tansu-replay.log", port=port)
    broker.start()
    try:
        Bus(broker.bootstrap, KafkaSettings()).ensure_topics([Topic.LOGS])
        replay_s, _ = _wait_acked("bench-replay", len(messages),
                                  lambda: publisher.stats().spooled_messages)
    finally:
        publisher.shutdown()
        broker.shutdown()
    return {
        "replay_spooled_messages": spooled,
        "replay_msgs_per_s": round(len(messages) / replay_s),
        "replay_mb_per_s": round(volume / replay_s, 1),
    }


def burst(folder: Path, messages: list[Message]) -> dict[str, float]:
    config = SpoolConfig(max_disk_bytes=int(2.5 * _volume(messages) * MB) + 64 * 1024 * 1024)
    publisher, _ = _offline(folder, "burst", config)
    publisher.publish(Topic.LOGS, b"first")  # makes it try Kafka, and find it away
    while publisher.stats().connected:
        time.sleep(0.05)
    t0 = time.monotonic()
    calls_s = _publish_all(publisher, messages)
    while not publisher.flush(60):
        pass
    spill_s = time.monotonic() - t0
    stats = publisher.stats()
    publisher.shutdown()
    return {
        "burst_publish_calls_per_s": round(len(messages) / calls_s),
        "burst_publish_mb_per_s": round(_volume(messages) / calls_s, 1),
        "burst_spooled_messages": stats.spooled_messages - 1,
        "burst_spill_mb_per_s": round(stats.spooled_bytes / MB / spill_s, 1),
        "burst_dropped_by_memory_bound": _counted("bench-burst", "dropped"),
    }


def _volume(messages: list[Message]) -> float:
    return sum(len(m.value) for m in messages) / MB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages (default 100000)")
    parser.add_argument("--size", type=int, default=4096, help="bytes a message (default 4096)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    set_meter_provider(MeterProvider(metric_readers=[READER]))
    messages = _messages(args.messages, args.size)
    figures: dict[str, float] = {"messages": args.messages, "message_bytes": args.size}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-spool-") as tmp:
        folder = Path(tmp)
        figures |= disk(folder, messages)
        with EmbeddedBroker(folder / "tansu.log") as broker:
            Bus(broker.bootstrap, KafkaSettings()).ensure_topics([Topic.LOGS])
            figures |= live(broker.bootstrap, folder, messages)
        figures |= replay(folder, messages)
        figures |= burst(folder, messages)
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
