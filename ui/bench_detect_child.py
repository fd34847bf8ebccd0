"""The measured side of `vigil bench detect`: one detection process reading its partitions.

It runs the detection stage's own `handle_many()` (wire decoding, every detector,
de-duplication) on the records of each poll from Kafka, from the first record of its
partitions to the last, and prints its wall-clock window and CPU time as JSON. Partitions
are assigned by hand, the way the consumer group would share them, so that joining a group
is not part of the figure.
With `baseline`, it then handles the same records again, in memory, through the protobuf
runtime's decoder with fresh detectors, one record at a time: the stage as it was before
the wire decoder and before a poll's metrics went to the detectors as one frame.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from vigil.diagnosis.detect import DetectStage
from vigil.diagnosis.library import load_library
from vigil.diagnosis.registry import build_detectors

from vigil.bus import Topic
from vigil.frames import MetricFrame
from vigil.otlp import decode_logs, decode_metrics
from vigil.records import Alert


class _Discard:
    """Alerts are rare and publishing them is the producer's cost, not detection's."""

    def __init__(self) -> None:
        self.alerts = 0

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        self.alerts += 1


class _RuntimeDecoding(DetectStage):
    """The stage as it decoded before: the protobuf runtime, one object per sample."""

    def handle(self, message: Any, now: float) -> None:
        alerts: list[Alert]
        if message.topic == Topic.LOGS:
            alerts = [a for batch in decode_logs(message.value)
                      for d in self.detectors for a in d.observe_logs(batch, now)]
        else:
            frame = MetricFrame.from_batches(decode_metrics(message.value))
            alerts = [a for d in self.detectors for a in d.observe_metrics(frame, now)]
        self.publish(alerts)


def main(plan: dict[str, Any]) -> dict[str, Any]:
    library = load_library()
    bus = _Discard()
    data_dir = Path(plan["data_dir"])
    stage = DetectStage(bus, build_detectors(plan["detectors"], library, data_dir / "stage"))  # type: ignore[arg-type]
    consumer = KafkaConsumer(bootstrap_servers=plan["bootstrap"], enable_auto_commit=False,
                             auto_offset_reset="earliest", max_partition_fetch_bytes=16 << 20,
                             fetch_max_bytes=64 << 20, max_poll_records=1000)
    partitions = [TopicPartition(plan["topic"], p) for p in plan["partitions"]]
    consumer.assign(partitions)
    ends = consumer.end_offsets(partitions)
    remaining = sum(ends.values())
    # Every child starts at the same moment, once all of them are set up.
    time.sleep(max(0.0, plan["start_at"] - time.time()))
    timed_from = {int(p): offset for p, offset in plan["timed_from"].items()}
    kept: list[Any] = []
    first_at = cpu_at = 0.0
    while remaining > 0:
        for part, records in consumer.poll(timeout_ms=1000).items():
            # The clock starts with the first measured record (warm-up ones before it).
            if not first_at and records[-1].offset >= timed_from[part.partition]:
                first_at, cpu_at = time.time(), time.process_time()
            stage.handle_many(records, time.time())
            remaining -= len(records)
            if plan["baseline"]:
                kept.extend(records)
    last_at, cpu = time.time(), time.process_time() - cpu_at
    consumer.close()
    figures = {"start": first_at, "end": last_at, "cpu_s": cpu, "alerts": bus.alerts,
               "late_s": max(0.0, first_at - plan["start_at"])}
    if plan["baseline"]:
        old = _RuntimeDecoding(_Discard(),  # type: ignore[arg-type]
                               build_detectors(plan["detectors"], library, data_dir / "baseline"))
        warm = [r for r in kept if r.offset < timed_from[r.partition]]
        for record in warm:
            old.handle(record, time.time())
        started = time.perf_counter()
        for record in [r for r in kept if r.offset >= timed_from[r.partition]]:
            old.handle(record, time.time())
        figures["baseline_s"] = time.perf_counter() - started
    return figures


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
