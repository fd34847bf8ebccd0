"""DetectStage: OTLP from Kafka to de-duplicated alerts; what it cannot decode is refused."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from vigil.diagnosis.detect import DetectStage
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_rules import LogRuleDetector
from vigil.diagnosis.metric_rules import MetricRuleDetector

from vigil.bus import Topic
from vigil.otlp import LogBatch, LogLine, MetricBatch, MetricSample, encode_logs, encode_metrics
from vigil.stage import BadMessage

XID_79 = "NVRM: Xid (PCI:0000:3b:00): 79, pid=4001, name=python, GPU has fallen off the bus."
NODE = {"host.name": "n1"}


@dataclass
class Message:
    topic: str
    value: bytes


@dataclass
class Published:
    topic: str
    value: bytes
    key: str | None


@dataclass
class RecordingBus:
    """Stands in for `vigil.bus.Bus`: keeps what is published."""

    published: list[Published] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)

    def publish(self, topic: str, value: bytes, key: str | None = None) -> None:
        self.published.append(Published(topic, value, key))

    def dead_letter(self, message: Message, reason: str, stage: str) -> None:
        self.dead.append((message.value, reason))


@pytest.fixture
def stage(library: FaultLibrary) -> tuple[DetectStage, RecordingBus]:
    bus = RecordingBus()
    detectors = [LogRuleDetector(library), MetricRuleDetector(library)]
    return DetectStage(bus, detectors, repeat_after_s=600), bus  # type: ignore[arg-type]


def test_metrics_then_logs_give_one_alert_on_the_gpu(
        stage: tuple[DetectStage, RecordingBus]) -> None:
    detect, bus = stage
    labels = {"gpu": "3", "pci_bus_id": "00000000:3B:00.0"}
    detect.handle(Message(Topic.METRICS, encode_metrics([MetricBatch(NODE, [
        MetricSample("DCGM_FI_DEV_GPU_TEMP", 60.0, labels, 100.0)])])), now=101.0)
    lines = [LogLine(XID_79, 200.0 + i) for i in range(3)]  # the line, logged again and again
    detect.handle(Message(Topic.LOGS, encode_logs([LogBatch(NODE, lines)])), now=203.0)
    detect.handle(Message(Topic.LOGS, encode_logs([LogBatch(NODE, lines[:1])])), now=204.0)

    (published,) = bus.published
    alert = json.loads(published.value)
    assert (published.topic, published.key) == (Topic.ALERTS, "n1")
    assert (alert["fault_id"], alert["entity"]) == ("gpu.xid.79", "gpu:n1/3")


@pytest.mark.parametrize(("topic", "payload"), [
    (Topic.METRICS, b"\xff\x00garbage"),
    (Topic.METRICS, encode_logs([LogBatch(NODE, [LogLine(XID_79, 1.0)])])),
    (Topic.LOGS, encode_metrics([MetricBatch(NODE, [MetricSample("c", 1.0, {}, 1.0)])])),
])
def test_undecodable_messages_are_refused_with_a_reason(
        stage: tuple[DetectStage, RecordingBus], topic: str, payload: bytes) -> None:
    detect, bus = stage
    with pytest.raises(BadMessage, match=f"not an OTLP {topic} batch"):
        detect.handle(Message(topic, payload), now=0.0)
    assert bus.published == []


def test_a_poll_of_metrics_is_detected_as_one_frame_and_bad_records_are_dead_lettered(
        stage: tuple[DetectStage, RecordingBus]) -> None:
    detect, bus = stage
    labels = {"gpu": "3", "pci_bus_id": "00000000:3B:00.0"}

    def scrape(at: float, temperature: float) -> Message:
        return Message(Topic.METRICS, encode_metrics([MetricBatch(NODE, [
            MetricSample("DCGM_FI_DEV_GPU_TEMP", temperature, labels, at)])]))

    # hot for 70 s (above the library's bound for longer than its duration), in one poll
    poll = [scrape(0, 60), scrape(10, 99), Message(Topic.METRICS, b"\xff\x00garbage")]
    poll += [scrape(t, 99) for t in range(20, 100, 10)]
    detect.handle_many(poll, now=100.0)

    assert [reason for _, reason in bus.dead] == [
        "not an OTLP vigil.metrics batch: unsupported protobuf wire type 7"]
    alerts = [json.loads(p.value) for p in bus.published]
    assert [(a["entity"], a["observed_at"]) for a in alerts] == [("gpu:n1/3", 10.0)]
