"""The wire-level decoders give what the protobuf runtime's decoders give, only faster."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE
from otlp_payloads import NODE, T0, foreign_logs_payload, foreign_metrics_payload, metric_batch

from vigil.frames import MetricFrame, SeriesTable
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
from vigil.otlp_wire import LogsDecoder, MetricsDecoder

Row = tuple[str, str, str, tuple[tuple[str, str], ...], float, float]


def _rows(frame: MetricFrame) -> list[Row]:
    table = frame.table
    return sorted(
        (table.hosts[s], table.names[s], table.kinds[s], tuple(sorted(table.labels[s].items())),
         round(t, 6), v)
        for s, t, v in zip(frame.series.tolist(), frame.times.tolist(), frame.values.tolist(),
                           strict=True))


def _expected(payload: bytes) -> list[Row]:
    return _rows(MetricFrame.from_batches(decode_metrics(payload), SeriesTable()))


def _same(got: list[Row], want: list[Row]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:5] == w[:5]
        assert g[5] == w[5] or (math.isnan(g[5]) and math.isnan(w[5]))


def test_our_own_metrics_decode_the_same() -> None:
    payload = encode_metrics([metric_batch(), MetricBatch({"host.name": "n2"}, [
        MetricSample("up", 1.0, {}, T0)])])
    _same(_rows(MetricsDecoder(SeriesTable()).decode(payload)), _expected(payload))


def test_foreign_collector_metrics_decode_the_same() -> None:
    # int values, int/bool/double attributes, a histogram, a staleness marker, a delta sum
    payload = foreign_metrics_payload()
    got = _rows(MetricsDecoder(SeriesTable()).decode(payload))
    _same(got, _expected(payload))
    assert len(got) == 3


def test_start_times_and_out_of_order_fields_decode_the_same() -> None:
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add()
    metrics.resource.attributes.add(key="host.name").value.string_value = "n1"
    counter = metrics.scope_metrics.add().metrics.add(name="c_total")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    point = counter.sum.data_points.add(start_time_unix_nano=1, time_unix_nano=2_000_000_000,
                                        as_double=5.0)
    point.attributes.add(key="port").value.string_value = "1"
    payload = request.SerializeToString()
    # the same point with its attributes first and its time and value repeated at the end:
    # protobuf says the last value of a field counts
    attrs = point.attributes[0].SerializeToString()
    tail = (bytes([0x19]) + (3_000_000_000).to_bytes(8, "little")
            + bytes([0x21]) + struct.pack("<d", 7.0))
    shuffled = _field(0x3A, attrs) + point.SerializeToString() + tail
    resource = metrics.resource.SerializeToString()
    counter_sum = _field(0x0A, shuffled) + bytes([0x10, 0x02, 0x18, 0x01])
    metric = _field(0x0A, b"c_total") + _field(0x3A, counter_sum)
    odd = _field(0x0A, _field(0x0A, resource) + _field(0x12, _field(0x12, metric)))
    # and in the usual layout (time, value, attributes) with the repeats after the attributes
    usual = (bytes([0x19]) + (2_000_000_000).to_bytes(8, "little") + bytes([0x21])
             + struct.pack("<d", 5.0) + _field(0x3A, attrs) + tail)
    counter_sum = _field(0x0A, usual) + bytes([0x10, 2, 0x18, 1])
    metric = _field(0x0A, b"c_total") + _field(0x3A, counter_sum)
    odd_usual = _field(0x0A, _field(0x0A, resource) + _field(0x12, _field(0x12, metric)))
    for data in (payload, odd, odd_usual):
        _same(_rows(MetricsDecoder(SeriesTable()).decode(data)), _expected(data))
    for data in (odd, odd_usual):
        assert _rows(MetricsDecoder(SeriesTable()).decode(data))[0][4:] == (3.0, 7.0)


def _field(tag: int, body: bytes) -> bytes:
    assert len(body) < 128  # one-byte length
    return bytes([tag, len(body)]) + body


def test_series_ids_are_stable_across_requests() -> None:
    decoder = MetricsDecoder(SeriesTable())
    first = decoder.decode(encode_metrics([metric_batch()]))
    second = decoder.decode(encode_metrics([metric_batch()]))
    assert first.series.tolist() == second.series.tolist()
    assert len(decoder.table) == len(set(first.series.tolist()))


samples = st.builds(
    MetricSample,
    name=st.sampled_from(["a", "DCGM_FI_DEV_GPU_TEMP", "node_ib_port_rcv_errors_total"]),
    value=st.floats(allow_nan=True, allow_infinity=True, width=64),
    labels=st.dictionaries(st.sampled_from(["gpu", "port", "é", ""]), st.text(max_size=5),
                           max_size=3),
    timestamp=st.floats(min_value=1e9, max_value=2e9),
    kind=st.sampled_from(["gauge", "counter"]),
)
batches = st.lists(st.builds(
    MetricBatch, resource=st.fixed_dictionaries({"host.name": st.text(max_size=4)}),
    samples=st.lists(samples, max_size=6)), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_any_metrics_decode_the_same(generated: list[MetricBatch]) -> None:
    payload = encode_metrics(generated)
    _same(_rows(MetricsDecoder(SeriesTable()).decode(payload)), _expected(payload))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_payloads_give_codec_errors_or_the_same_result(data: st.DataObject) -> None:
    payload = bytearray(encode_metrics([metric_batch()]))
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] = data.draw(st.integers(0, 255))
    cut = bytes(payload[: data.draw(st.integers(1, len(payload)))])
    try:
        want = _expected(cut)
    except CodecError:
        want = None
    try:
        got = _rows(MetricsDecoder(SeriesTable()).decode(cut))
    except CodecError:
        got = None
    if got is not None and want is not None:
        _same(got, want)
    # Either may refuse what the other takes only at the edges of protobuf (e.g. groups);
    # what matters is that nothing but CodecError ever comes out.


@pytest.mark.parametrize("payload", [
    b"\xff\x00garbage", b"", b'{"a":1}', b"\x08\x01",
    encode_logs([LogBatch(NODE, [LogLine("NVRM: Xid 79", T0, {"f": "x"}, "ERR")])]),
    encode_logs([LogBatch(NODE, [LogLine("", T0)])]),
], ids=["garbage", "empty", "json", "unknown-field", "logs", "logs-empty-body"])
def test_non_metrics_are_refused(payload: bytes) -> None:
    with pytest.raises(CodecError):
        MetricsDecoder(SeriesTable()).decode(payload)


def test_logs_decode_the_same() -> None:
    ours = encode_logs([
        LogBatch(NODE, [LogLine("NVRM: Xid 79", T0, {"log.file.path": "/var/log/kern.log"}, "E"),
                        LogLine("héllo", T0 + 1)]),
        LogBatch({"host.name": "n2"}, [])])
    for payload in (ours, foreign_logs_payload()):
        assert LogsDecoder().decode(payload) == decode_logs(payload)


lines = st.builds(LogLine, body=st.text(max_size=40),
                  timestamp=st.floats(min_value=1e9, max_value=2e9),
                  attributes=st.dictionaries(st.text(max_size=3), st.text(max_size=3),
                                             max_size=2),
                  severity_text=st.sampled_from(["", "WARN"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.builds(LogBatch, resource=st.fixed_dictionaries({"host.name": st.text()}),
                          lines=st.lists(lines, max_size=5)), min_size=1, max_size=3))
def test_any_logs_decode_the_same(generated: list[LogBatch]) -> None:
    payload = encode_logs(generated)
    assert LogsDecoder().decode(payload) == decode_logs(payload)


@pytest.mark.parametrize("payload", [
    b"\xff\x00garbage", b"", b"\x08\x01", encode_metrics([metric_batch()]),
    foreign_metrics_payload()], ids=["garbage", "empty", "unknown-field", "metrics", "foreign"])
def test_non_logs_are_refused(payload: bytes) -> None:
    with pytest.raises(CodecError):
        LogsDecoder().decode(payload)
