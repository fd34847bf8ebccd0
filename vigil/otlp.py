"""Wire codec for metric and log batches: OTLP protobuf export requests, one per Kafka message.

The bytes are exactly what the OpenTelemetry Collector's Kafka exporter writes with
``encoding: otlp_proto`` (an ``ExportMetricsServiceRequest`` or ``ExportLogsServiceRequest``),
so Vigil's own collectors and stock Collectors can feed the same topics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK,
    Metric,
    NumberDataPoint,
)

MetricKind = Literal["gauge", "counter"]
_Points = RepeatedCompositeFieldContainer[NumberDataPoint]
_Request = TypeVar("_Request", ExportMetricsServiceRequest, ExportLogsServiceRequest)


class CodecError(ValueError):
    """The payload is not a valid OTLP request; the message says why."""


@dataclass(frozen=True, slots=True)
class MetricSample:
    name: str
    value: float
    labels: Mapping[str, str]  # data-point attributes
    timestamp: float  # unix seconds
    kind: MetricKind = "gauge"  # "counter" travels as a monotonic, cumulative OTLP Sum


@dataclass(frozen=True, slots=True)
class MetricBatch:
    resource: Mapping[str, str]  # e.g. {"host.name": "gpu-a-017", "vigil.entity": "node:..."}
    samples: list[MetricSample]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which makes
# building one cost 0.9 us instead of 0.3 us, and the detection stage builds one per line.
@dataclass(slots=True)
class LogLine:
    body: str
    timestamp: float  # unix seconds
    attributes: Mapping[str, str] = field(default_factory=dict)  # e.g. {"log.file.path": ...}
    severity_text: str = ""


@dataclass(frozen=True, slots=True)
class LogBatch:
    resource: Mapping[str, str]
    lines: list[LogLine]


def encode_metrics(batches: Sequence[MetricBatch], scope: str = "vigil") -> bytes:
    """Serialise batches as one request: a ResourceMetrics per batch, a Metric per (name, kind)."""
    request = ExportMetricsServiceRequest()
    # A message holds many samples but few distinct label sets (one per GPU, NIC, ...); copying a
    # prebuilt data point is about twice as fast as building its attributes again every time.
    templates: dict[tuple[tuple[str, str], ...], NumberDataPoint] = {}
    for batch in batches:
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.attributes.extend(_key_values(batch.resource))
        scope_metrics = resource_metrics.scope_metrics.add()
        scope_metrics.scope.name = scope
        metrics: dict[tuple[str, MetricKind], _Points] = {}
        for sample in batch.samples:
            points = metrics.get((sample.name, sample.kind))
            if points is None:
                metric = scope_metrics.metrics.add(name=sample.name)
                points = metrics[(sample.name, sample.kind)] = _points_for(metric, sample.kind)
            label_key = tuple(sample.labels.items())
            template = templates.get(label_key)
            if template is None:
                template = NumberDataPoint(attributes=_key_values(sample.labels))
                templates[label_key] = template
            point = points.add()
            point.CopyFrom(template)
            point.time_unix_nano = _to_nanos(sample.timestamp)
            point.as_double = sample.value
    return request.SerializeToString()


def decode_metrics(payload: bytes) -> list[MetricBatch]:
    """Parse a metrics request; gauges and sums become samples, other metric types are skipped."""
    request = _parse(ExportMetricsServiceRequest(), payload)
    if not request.resource_metrics:
        raise CodecError("no resource_metrics in payload: not an OTLP metrics request")
    batches = []
    for resource_metrics in request.resource_metrics:
        samples = [
            sample
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            for sample in _samples(metric)
        ]
        resource = _attributes(resource_metrics.resource.attributes)
        batches.append(MetricBatch(resource=resource, samples=samples))
    return batches


def encode_logs(batches: Sequence[LogBatch], scope: str = "vigil") -> bytes:
    """Serialise batches as one request: a ResourceLogs per batch, a LogRecord per line."""
    request = ExportLogsServiceRequest()
    # As in encode_metrics: lines share a few attribute sets (one per file), so copying a
    # prebuilt record beats building its attributes for every line, by about 2.5x.
    templates: dict[tuple[tuple[str, str], ...], LogRecord] = {}
    for batch in batches:
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.extend(_key_values(batch.resource))
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = scope
        records = scope_logs.log_records
        for line in batch.lines:
            key = (("", line.severity_text), *line.attributes.items())
            template = templates.get(key)
            if template is None:
                template = LogRecord(severity_text=line.severity_text,
                                     attributes=_key_values(line.attributes))
                templates[key] = template
            nanos = _to_nanos(line.timestamp)
            record = records.add()
            record.CopyFrom(template)
            # The line's timestamp is the best observation time we have, and reusing it keeps
            # the encoding deterministic.
            record.time_unix_nano = nanos
            record.observed_time_unix_nano = nanos
            record.body.string_value = line.body
    return request.SerializeToString()


def decode_logs(payload: bytes) -> list[LogBatch]:
    """Parse a logs request; non-string bodies and attribute values are rendered as strings."""
    request = _parse(ExportLogsServiceRequest(), payload)
    if not request.resource_logs:
        raise CodecError("no resource_logs in payload: not an OTLP logs request")
    return [
        LogBatch(
            resource=_attributes(resource_logs.resource.attributes),
            lines=[
                _log_line(record)
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records
            ],
        )
        for resource_logs in request.resource_logs
    ]


def _parse(request: _Request, payload: bytes) -> _Request:
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise CodecError(f"payload is not OTLP protobuf: {exc}") from exc
    return request


def _points_for(metric: Metric, kind: MetricKind) -> _Points:
    if kind == "gauge":
        return metric.gauge.data_points
    if kind == "counter":
        metric.sum.is_monotonic = True
        metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
        return metric.sum.data_points
    raise ValueError(f"unknown metric kind {kind!r} for {metric.name!r}")


def _samples(metric: Metric) -> Iterator[MetricSample]:
    # Logs and metrics requests share their outer layout, so a logs payload parses as metrics
    # with each LogRecord's fields stored as unknown fields. OTLP requires a metric name, and a
    # LogRecord can never fill it in, so its absence is what gives a misrouted payload away.
    if not metric.name:
        raise CodecError("metric without a name: not an OTLP metrics request (logs?)")
    kind: MetricKind
    data = metric.WhichOneof("data")
    if data == "gauge":
        kind, points = "gauge", metric.gauge.data_points
    elif data == "sum":
        cumulative = metric.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
        # Up-down sums and per-interval deltas are levels, not running totals.
        kind = "counter" if metric.sum.is_monotonic and cumulative else "gauge"
        points = metric.sum.data_points
    else:
        return  # histograms and summaries: Vigil's detectors do not use them
    for point in points:
        number = point.WhichOneof("value")
        # Points flagged "no recorded value" are staleness markers (e.g. Prometheus receiver).
        if number is None or point.flags & DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK:
            continue
        yield MetricSample(
            name=metric.name,
            value=point.as_double if number == "as_double" else float(point.as_int),
            labels=_attributes(point.attributes),
            timestamp=point.time_unix_nano / 1_000_000_000,
            kind=kind,
        )


def _log_line(record: LogRecord) -> LogLine:
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    # A metrics payload parses as logs too (Metric fields land as unknown fields), but never
    # sets either timestamp; senders always set at least the observed time.
    if not nanos:
        raise CodecError("log record without a timestamp: not an OTLP logs request (metrics?)")
    return LogLine(
        body=_any_to_str(record.body),
        timestamp=nanos / 1_000_000_000,
        attributes=_attributes(record.attributes),
        severity_text=record.severity_text,
    )


def _to_nanos(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def _key_values(attributes: Mapping[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items()]


def _attributes(key_values: Sequence[KeyValue]) -> dict[str, str]:
    attributes = {kv.key: kv.value.string_value for kv in key_values}
    # Fast path for the usual all-string case; "" may hide a value of another type.
    if "" in attributes.values():
        attributes = {kv.key: _any_to_str(kv.value) for kv in key_values}
    return attributes


def _any_to_str(value: AnyValue) -> str:
    match value.WhichOneof("value"):
        case "string_value":
            return value.string_value
        case "bool_value":
            return "true" if value.bool_value else "false"  # OTel's spelling, not Python's
        case "int_value":
            return str(value.int_value)
        case "double_value":
            return str(value.double_value)
        case "bytes_value":
            return value.bytes_value.hex()
        case "array_value":
            return json.dumps([_any_to_str(v) for v in value.array_value.values])
        case "kvlist_value":
            return json.dumps({kv.key: _any_to_str(kv.value) for kv in value.kvlist_value.values})
        case _:
            return ""
