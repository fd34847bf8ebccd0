"""OTLP payloads shared by the codec tests: our own batches and ones a stock Collector sends."""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK,
)

from vigil.otlp import MetricBatch, MetricSample

T0 = 1_718_000_000.123456  # sub-second part checks the nanosecond conversion
NODE = {"host.name": "gpu-a-017", "vigil.entity": "node:gpu-a-017"}


def metric_batch() -> MetricBatch:
    return MetricBatch(
        resource=NODE,
        samples=[
            MetricSample("DCGM_FI_DEV_GPU_TEMP", 71.5, {"gpu": "0"}, T0),
            MetricSample("DCGM_FI_DEV_GPU_TEMP", 93.25, {"gpu": "3"}, T0 + 0.5),
            MetricSample("DCGM_FI_DEV_XID_ERRORS", 79.0, {"gpu": "3", "err": "xid"}, T0 + 1),
            MetricSample("node_ib_link_downed_total", 4.0, {"port": "mlx5_0"}, T0, "counter"),
            MetricSample("no_labels", -1.0, {}, T0 + 2),
        ],
    )


def foreign_metrics_payload() -> bytes:
    """A request built the way a stock OTel Collector would send it, not by our encoder."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="host.name").value.string_value = "gpu-a-017"
    resource_metrics.resource.attributes.add(key="host.cpus").value.int_value = 128
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = "otelcol/dcgmreceiver"

    histogram = scope_metrics.metrics.add(name="http.server.duration")
    histogram.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    histogram.histogram.data_points.add(count=3, sum=1.5, bucket_counts=[1, 2], explicit_bounds=[1])

    gauge = scope_metrics.metrics.add(name="gpu.dcgm.temperature", unit="Cel")
    point = gauge.gauge.data_points.add(time_unix_nano=1_718_000_000_500_000_000, as_double=66.0)
    point.attributes.add(key="gpu.index").value.int_value = 3
    point.attributes.add(key="gpu.model").value.string_value = "H100"
    point.attributes.add(key="ecc.enabled").value.bool_value = True
    point.attributes.add(key="clock.ratio").value.double_value = 0.5
    stale = gauge.gauge.data_points.add(time_unix_nano=1_718_000_001_000_000_000, as_double=0)
    stale.flags = DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

    counter = scope_metrics.metrics.add(name="gpu.dcgm.xid_errors")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
    counter.sum.data_points.add(time_unix_nano=1_718_000_002_000_000_000, as_int=2)

    delta = scope_metrics.metrics.add(name="gpu.dcgm.energy.delta")
    delta.sum.is_monotonic = True
    delta.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_DELTA
    delta.sum.data_points.add(time_unix_nano=1_718_000_002_000_000_000, as_double=0.0)
    return request.SerializeToString()


def foreign_logs_payload() -> bytes:
    """Logs as a Collector sends them: observed time only, int attributes, a structured body."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="host.name").value.string_value = "gpu-a-017"
    scope_logs = resource_logs.scope_logs.add()
    record = scope_logs.log_records.add(observed_time_unix_nano=1_718_000_003_000_000_000)
    record.body.string_value = "kernel: NVRM: Xid 48"
    record.attributes.add(key="log.iostream").value.string_value = "stdout"
    record.attributes.add(key="pid").value.int_value = 4242
    structured = scope_logs.log_records.add(time_unix_nano=1_718_000_004_000_000_000)
    structured.body.kvlist_value.values.add(key="msg").value.string_value = "hi"
    return request.SerializeToString()
