"""Tests for the OTLP wire codec: round-trips, foreign Collector payloads, and rejected garbage."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
)
from otlp_payloads import NODE, T0, foreign_logs_payload, foreign_metrics_payload, metric_batch

from vigil.otlp import (
    CodecError,
    LogBatch,
    LogLine,
    MetricBatch,
    MetricSample,
    decode_logs,
    decode_metrics,
    encode_logs,
    encode_metrics,
)


def _assert_samples_equal(got: list[MetricSample], want: list[MetricSample]) -> None:
    key = lambda s: (s.name, s.kind, sorted(s.labels.items()), s.timestamp)  # noqa: E731
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert [(s.name, s.kind, dict(s.labels), s.value) for s in got] == [
        (s.name, s.kind, dict(s.labels), s.value) for s in want
    ]
    for g, w in zip(got, want, strict=True):
        assert g.timestamp == pytest.approx(w.timestamp, abs=1e-6)


def test_metrics_round_trip() -> None:
    batch = metric_batch()
    [decoded] = decode_metrics(encode_metrics([batch]))
    assert dict(decoded.resource) == NODE
    _assert_samples_equal(decoded.samples, batch.samples)


def test_metrics_wire_layout_matches_otlp() -> None:
    request = ExportMetricsServiceRequest.FromString(encode_metrics([metric_batch()], "dcgm"))
    [resource_metrics] = request.resource_metrics
    [scope_metrics] = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == "dcgm"
    by_name = {m.name: m for m in scope_metrics.metrics}
    # Samples of one metric are grouped into a single OTLP Metric.
    assert len(scope_metrics.metrics) == 4
    temp = by_name["DCGM_FI_DEV_GPU_TEMP"]
    assert temp.WhichOneof("data") == "gauge"
    assert [p.as_double for p in temp.gauge.data_points] == [71.5, 93.25]
    assert temp.gauge.data_points[0].time_unix_nano == pytest.approx(T0 * 1e9, abs=1000)
    assert temp.gauge.data_points[1].attributes[0] == KeyValue(
        key="gpu", value=AnyValue(string_value="3")
    )
    downed = by_name["node_ib_link_downed_total"]
    assert downed.WhichOneof("data") == "sum"
    assert downed.sum.is_monotonic
    assert downed.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    assert downed.sum.data_points[0].as_double == 4.0


def test_same_name_gauge_and_counter_stay_separate() -> None:
    batch = MetricBatch(
        {}, [MetricSample("x", 1.0, {}, T0), MetricSample("x", 2.0, {}, T0, "counter")]
    )
    [decoded] = decode_metrics(encode_metrics([batch]))
    assert sorted((s.kind, s.value) for s in decoded.samples) == [("counter", 2.0), ("gauge", 1.0)]


def test_multiple_resources_per_payload() -> None:
    other = MetricBatch(
        resource={"host.name": "gpu-b-002"},
        samples=[MetricSample("DCGM_FI_DEV_POWER_USAGE", 412.0, {"gpu": "1"}, T0)],
    )
    empty = MetricBatch(resource={"host.name": "gpu-c-001"}, samples=[])
    decoded = decode_metrics(encode_metrics([metric_batch(), other, empty]))
    assert [dict(b.resource) for b in decoded] == [
        NODE,
        {"host.name": "gpu-b-002"},
        {"host.name": "gpu-c-001"},
    ]
    assert len(decoded[0].samples) == 5
    _assert_samples_equal(decoded[1].samples, other.samples)
    assert decoded[2].samples == []


def test_many_samples_share_label_sets() -> None:
    samples = [
        MetricSample(f"m{i % 7}", float(i), {"gpu": str(i % 8)}, T0 + i) for i in range(5000)
    ]
    [decoded] = decode_metrics(encode_metrics([MetricBatch(NODE, samples)]))
    _assert_samples_equal(decoded.samples, samples)


def test_logs_round_trip_and_multiple_resources() -> None:
    kern = LogBatch(
        resource=NODE,
        lines=[
            LogLine(
                "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.",
                T0,
                {"log.file.path": "/var/log/kern.log"},
                "ERROR",
            ),
            LogLine("plain line, no attributes", T0 + 0.25),
            LogLine("", T0 + 1),
        ],
    )
    other = LogBatch({"host.name": "gpu-b-002"}, [LogLine("mlx5_core: link down", T0)])
    decoded = decode_logs(encode_logs([kern, other]))
    assert [dict(b.resource) for b in decoded] == [NODE, {"host.name": "gpu-b-002"}]
    for got, want in zip(decoded, [kern, other], strict=True):
        assert [(x.body, dict(x.attributes), x.severity_text) for x in got.lines] == [
            (x.body, dict(x.attributes), x.severity_text) for x in want.lines
        ]
        for g, w in zip(got.lines, want.lines, strict=True):
            assert g.timestamp == pytest.approx(w.timestamp, abs=1e-6)


def test_logs_wire_layout_matches_otlp() -> None:
    line = LogLine("boom", T0, {"log.file.path": "/var/log/syslog"}, "WARN")
    request = ExportLogsServiceRequest.FromString(encode_logs([LogBatch(NODE, [line])], "journal"))
    scope_logs = request.resource_logs[0].scope_logs[0]
    assert scope_logs.scope.name == "journal"
    [record] = scope_logs.log_records
    assert record.body == AnyValue(string_value="boom")
    assert record.severity_text == "WARN"
    assert record.time_unix_nano == record.observed_time_unix_nano
    assert record.time_unix_nano == pytest.approx(T0 * 1e9, abs=1000)


def test_decode_foreign_collector_metrics() -> None:
    [batch] = decode_metrics(foreign_metrics_payload())
    assert dict(batch.resource) == {"host.name": "gpu-a-017", "host.cpus": "128"}
    # The histogram and the no-recorded-value staleness marker are skipped.
    assert batch.samples == [
        MetricSample(
            "gpu.dcgm.temperature",
            66.0,
            {"gpu.index": "3", "gpu.model": "H100", "ecc.enabled": "true", "clock.ratio": "0.5"},
            1_718_000_000.5,
        ),
        MetricSample("gpu.dcgm.xid_errors", 2.0, {}, 1_718_000_002.0, "counter"),
        MetricSample("gpu.dcgm.energy.delta", 0.0, {}, 1_718_000_002.0, "gauge"),
    ]
    assert isinstance(batch.samples[1].value, float)


def test_decode_foreign_collector_logs() -> None:
    [batch] = decode_logs(foreign_logs_payload())
    # Without time_unix_nano the observed time stands in.
    assert batch.lines == [
        LogLine("kernel: NVRM: Xid 48", 1_718_000_003.0, {"log.iostream": "stdout", "pid": "4242"}),
        LogLine('{"msg": "hi"}', 1_718_000_004.0),
    ]


def _logs_payload(line: LogLine) -> bytes:
    return encode_logs([LogBatch(NODE, [line])])


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\x00garbage",
        b"",
        b'{"a":1}',
        b"\x08\x01",  # parses, but only as an unknown field
        _logs_payload(LogLine("NVRM: Xid 79", T0, {"log.file.path": "/var/log/kern.log"}, "ERR")),
        _logs_payload(LogLine("", T0)),  # parses as metrics; caught by the missing metric name
    ],
    ids=["garbage", "empty", "json", "unknown-field", "logs", "logs-empty-body"],
)
def test_decode_metrics_rejects_non_metrics(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_metrics(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\x00garbage",
        b"",
        b'{"a":1}',
        encode_metrics([metric_batch()]),
        encode_metrics([MetricBatch(NODE, [MetricSample("up", 1.0, {}, T0)])]),
        foreign_metrics_payload(),
    ],
    ids=["garbage", "empty", "json", "metrics", "metrics-small", "foreign-metrics"],
)
def test_decode_logs_rejects_non_logs(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_logs(payload)


def test_misrouted_payloads_that_parse_are_still_rejected() -> None:
    # Both request types share their outer layout, so these parse without a DecodeError and
    # only the semantic checks (metric name, log timestamp) catch them.
    with pytest.raises(CodecError, match="metric without a name"):
        decode_metrics(_logs_payload(LogLine("", T0)))
    counter_only = MetricBatch(NODE, [MetricSample("c", 1.0, {"gpu": "0"}, T0, "counter")])
    with pytest.raises(CodecError, match="log record without a timestamp"):
        decode_logs(encode_metrics([counter_only]))


def test_empty_request_error_says_why() -> None:
    with pytest.raises(CodecError, match="no resource_metrics"):
        decode_metrics(b"")
    with pytest.raises(CodecError, match="no resource_logs"):
        decode_logs(b"")


def test_codec_error_is_value_error() -> None:
    assert issubclass(CodecError, ValueError)
