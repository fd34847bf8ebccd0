"""Tests for the OTLP/HTTP receiver: the official SDK exporters as clients, JSON, bad requests."""

from __future__ import annotations

import gzip
import json
import logging
import socket
from collections.abc import Iterator

import anyio
import httpx
import pytest
from collector_fakes import RecordingBus, Tally
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    ResourceMetrics,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from vigil.collectors.otlp_receiver import (
    JSON,
    PROTOBUF,
    OtlpReceiver,
    build_app,
    single_resource_request,
    status_body,
)

from vigil.otlp import (
    MetricBatch,
    MetricSample,
    decode_logs,
    decode_metrics,
    encode_metrics,
)

DEFAULT_NODE = "otlp-default"
LIMIT = 64 * 1024
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's requests session and httpx honour *_proxy variables; loopback must be direct.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def receiver(bus: RecordingBus, tally: Tally) -> Iterator[OtlpReceiver]:
    served = OtlpReceiver(bus, port=0, default_node=DEFAULT_NODE)
    served.counters = tally.component
    served.start()
    yield served
    served.shutdown()


@pytest.fixture
def client(bus: RecordingBus, tally: Tally) -> Iterator[httpx.Client]:
    """A client of a receiver with a small body limit, so that 413 is cheap to reach."""
    served = OtlpReceiver(bus, port=0, default_node=DEFAULT_NODE, max_body_bytes=LIMIT)
    served.counters = tally.component
    served.start()
    with httpx.Client(base_url=_url(served, ""), timeout=5) as http:
        yield http
    served.shutdown()


def _url(receiver: OtlpReceiver, path: str) -> str:
    return f"http://127.0.0.1:{receiver.port}{path}"


def _resource(request: ExportMetricsServiceRequest | ExportLogsServiceRequest) -> dict[str, str]:
    resources = (request.resource_metrics if isinstance(request, ExportMetricsServiceRequest)
                 else request.resource_logs)
    assert len(resources) == 1  # one resource per Kafka message
    return {kv.key: kv.value.string_value for kv in resources[0].resource.attributes}


def _metrics_request(resource: dict[str, str], n: int = 3) -> bytes:
    samples = [MetricSample("DCGM_FI_DEV_XID_ERRORS", 60.0 + i, {"gpu": str(i)}, 1_718_000_000.0,
                            kind="counter")
               for i in range(n)]
    return encode_metrics([MetricBatch(resource=resource, samples=samples)])


def _post(client: httpx.Client, path: str, body: bytes, content_type: str = PROTOBUF,
          **headers: str) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": content_type, **headers})


def _status(response: httpx.Response) -> status_pb2.Status:
    status = status_pb2.Status()
    status.ParseFromString(response.content)
    return status


# --- the official SDK exporters as clients -------------------------------------------------


def test_sdk_metrics_of_each_type_survive_forwarding(
    receiver: OtlpReceiver, bus: RecordingBus, tally: Tally
) -> None:
    exporter = OTLPMetricExporter(endpoint=_url(receiver, "/v1/metrics"), timeout=5)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"host.name": "gpu-a-017", "service.name": "llama-train"}),
        metric_readers=[reader],
    )
    try:
        meter = provider.get_meter("trainer")
        meter.create_counter("train.steps").add(7, {"rank": "3"})
        meter.create_gauge("train.loss").set(2.5, {"rank": "3"})
        step_time = meter.create_histogram("train.step_time", unit="s")
        for seconds in (0.4, 0.6, 7.0):
            step_time.record(seconds, {"rank": "3"})
        assert provider.force_flush(timeout_millis=5000)
    finally:
        provider.shutdown()

    first = bus.published[0]
    assert (first.topic, first.key) == ("vigil.metrics", "gpu-a-017")
    request = ExportMetricsServiceRequest()
    request.ParseFromString(first.value)
    resource = _resource(request)
    assert resource["vigil.entity"] == "node:gpu-a-017"
    assert resource["service.name"] == "llama-train"
    metrics = {m.name: m for sm in request.resource_metrics[0].scope_metrics for m in sm.metrics}
    steps = metrics["train.steps"].sum
    assert steps.is_monotonic and steps.aggregation_temporality == \
        AGGREGATION_TEMPORALITY_CUMULATIVE
    assert steps.data_points[0].as_int == 7
    assert metrics["train.loss"].gauge.data_points[0].as_double == 2.5
    histogram = metrics["train.step_time"].histogram.data_points[0]
    assert histogram.count == 3 and histogram.sum == pytest.approx(8.0)
    assert sum(histogram.bucket_counts) == 3 and len(histogram.explicit_bounds) > 0
    assert metrics["train.step_time"].unit == "s"
    # The project's own decoder reads the forwarded bytes (it keeps gauges and sums).
    samples = {s.name: s for s in decode_metrics(first.value)[0].samples}
    assert samples["train.steps"].kind == "counter" and samples["train.loss"].value == 2.5
    totals = tally.totals()
    assert totals["received"] >= 3 and totals["sent"] == totals["received"]
    assert totals["errored"] == 0


def test_sdk_logs_are_keyed_by_k8s_node_and_named_by_pod(
    receiver: OtlpReceiver, bus: RecordingBus, tally: Tally
) -> None:
    provider = LoggerProvider(resource=Resource.create(
        {"k8s.node.name": "gpu-b-002", "k8s.pod.name": "trainer-0", "k8s.namespace.name": "ml"}))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=_url(receiver, "/v1/logs"), timeout=5)))
    try:
        provider.get_logger("trainer").emit(
            body="NCCL WARN NET/IB : Got completion with error 12", severity_text="WARN",
            attributes={"rank": 5},
        )
    finally:
        provider.shutdown()

    [message] = bus.published
    assert (message.topic, message.key) == ("vigil.logs", "gpu-b-002")
    [batch] = decode_logs(message.value)
    assert batch.resource["vigil.entity"] == "pod:ml/trainer-0"
    [line] = batch.lines
    assert line.body.startswith("NCCL WARN") and line.severity_text == "WARN"
    assert line.attributes == {"rank": "5"}
    assert tally.totals()["received"] == tally.totals()["sent"] == 1


def test_sdk_gzip_requests_are_inflated(receiver: OtlpReceiver, bus: RecordingBus) -> None:
    exporter = OTLPMetricExporter(endpoint=_url(receiver, "/v1/metrics"), timeout=5,
                                  compression=Compression.Gzip)
    provider = MeterProvider(
        resource=Resource.create({"host.name": "gpu-a-001"}),
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)],
    )
    try:
        provider.get_meter("trainer").create_counter("train.tokens").add(4096)
        assert provider.force_flush(timeout_millis=5000)
    finally:
        provider.shutdown()
    assert bus.published[0].key == "gpu-a-001"
    [sample] = decode_metrics(bus.published[0].value)[0].samples
    assert (sample.name, sample.value) == ("train.tokens", 4096.0)


# --- OTLP/JSON ----------------------------------------------------------------------------


def test_json_logs_over_http_keep_hex_ids_and_answer_in_json(
    receiver: OtlpReceiver, bus: RecordingBus
) -> None:
    document = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "gpu-c-003"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1718000000000000000", "severityNumber": 17,
            "severityText": "ERROR",
            "body": {"stringValue": "CUDA error: an illegal memory access"},
            "traceId": TRACE_ID, "spanId": SPAN_ID, "unknownFutureField": True,
        }]}],
    }]}
    response = httpx.post(_url(receiver, "/v1/logs"), json=document, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(JSON) and response.json() == {}
    [message] = bus.published
    assert message.key == "gpu-c-003"
    request = ExportLogsServiceRequest()
    request.ParseFromString(message.value)
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id == bytes.fromhex(TRACE_ID) and record.span_id == bytes.fromhex(SPAN_ID)
    assert record.severity_number == 17 and record.time_unix_nano == 1_718_000_000_000_000_000
    assert _resource(request)["vigil.entity"] == "node:gpu-c-003"


def test_json_metrics_with_exemplar_ids(client: httpx.Client, bus: RecordingBus) -> None:
    document = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "train.step_time", "unit": "s",
        "histogram": {"aggregationTemporality": 2, "dataPoints": [{
            "timeUnixNano": 1718000000000000000, "count": "2", "sum": 1.5,
            "bucketCounts": ["1", "1"], "explicitBounds": [1.0],
            "exemplars": [{"asDouble": 1.1, "traceId": TRACE_ID, "spanId": SPAN_ID}],
        }]},
    }]}]}]}
    response = client.post("/v1/metrics", json=document)
    assert response.status_code == 200, response.text
    [message] = bus.published
    assert message.key == DEFAULT_NODE
    request = ExportMetricsServiceRequest()
    request.ParseFromString(message.value)
    point = request.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0]
    assert list(point.bucket_counts) == [1, 1]
    assert point.exemplars[0].trace_id == bytes.fromhex(TRACE_ID)


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/v1/logs", b"{not json", "not JSON"),
    ("/v1/logs", b"[1, 2]", "not an object"),
    ("/v1/logs", b'{"resourceMetrics": []}', "wrong endpoint"),
    ("/v1/metrics", b'{"resourceMetrics": [{"scopeMetrics": 7}]}', "scopeMetrics"),
    ("/v1/logs", json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1", "traceId": "not-hex"}]}]}]}).encode(),
     "resourceLogs[0].scopeLogs[0].logRecords[0].traceId"),
])
def test_bad_json_is_400_naming_the_problem(
    client: httpx.Client, bus: RecordingBus, tally: Tally, path: str, body: bytes, expected: str
) -> None:
    response = _post(client, path, body, JSON)
    assert response.status_code == 400
    assert response.json()["code"] == 3 and expected in response.json()["message"]
    assert bus.published == [] and tally.totals()["errored"] == 1


# --- protobuf requests: routing, splitting, stamping ------------------------------------------


def test_each_resource_is_its_own_message_keyed_by_its_node(
    client: httpx.Client, bus: RecordingBus, tally: Tally
) -> None:
    body = encode_metrics([
        MetricBatch({"host.name": "gpu-a-001"}, [MetricSample("up", 1.0, {}, 1.0)]),
        MetricBatch({"k8s.node.name": "gpu-a-002", "host.name": ""},
                    [MetricSample("up", 1.0, {}, 1.0)] * 2),
        MetricBatch({"vigil.entity": "gpu:gpu-a-003/1"}, [MetricSample("up", 1.0, {}, 1.0)]),
    ])
    assert _post(client, "/v1/metrics", body).status_code == 200
    assert [m.key for m in bus.published] == ["gpu-a-001", "gpu-a-002", DEFAULT_NODE]
    entities = [decode_metrics(m.value)[0].resource["vigil.entity"] for m in bus.published]
    # An entity the sender named is kept as it is.
    assert entities == ["node:gpu-a-001", "node:gpu-a-002", "gpu:gpu-a-003/1"]
    assert tally.totals() == {"received": 4, "sent": 4, "dropped": 0, "errored": 0}


def test_every_point_type_is_forwarded_unchanged(client: httpx.Client, bus: RecordingBus) -> None:
    resource_metrics = ResourceMetrics()
    resource_metrics.resource.attributes.add(key="host.name",
                                             value=AnyValue(string_value="gpu-a-009"))
    metrics = resource_metrics.scope_metrics.add().metrics
    metrics.add(name="g").gauge.data_points.add(as_double=1.5, time_unix_nano=5)
    metrics.add(name="s").sum.data_points.add(as_int=3, time_unix_nano=5)
    histogram = metrics.add(name="h").histogram.data_points.add(count=2, sum=3.0)
    histogram.bucket_counts.extend([1, 1])
    histogram.explicit_bounds.append(2.0)
    histogram.exemplars.add(as_double=2.5, trace_id=bytes.fromhex(TRACE_ID))
    exponential = metrics.add(name="e").exponential_histogram.data_points.add(scale=3, count=4)
    exponential.positive.bucket_counts.extend([1, 3])
    metrics.add(name="q").summary.data_points.add(count=1, sum=9.0).quantile_values.add(
        quantile=0.5, value=9.0)
    body = ExportMetricsServiceRequest(resource_metrics=[resource_metrics]).SerializeToString()

    assert _post(client, "/v1/metrics", body).status_code == 200
    forwarded = ExportMetricsServiceRequest()
    forwarded.ParseFromString(bus.published[0].value)
    resource_metrics.resource.attributes.append(
        KeyValue(key="vigil.entity", value=AnyValue(string_value="node:gpu-a-009")))
    assert forwarded.resource_metrics[0] == resource_metrics


def test_log_record_without_a_timestamp_gets_the_receipt_time(
    client: httpx.Client, bus: RecordingBus
) -> None:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hung task"
    assert _post(client, "/v1/logs", request.SerializeToString()).status_code == 200
    [line] = decode_logs(bus.published[0].value)[0].lines
    assert line.body == "hung task" and line.timestamp > 1_700_000_000


def test_empty_request_is_accepted_and_publishes_nothing(
    client: httpx.Client, bus: RecordingBus
) -> None:
    response = _post(client, "/v1/metrics", b"")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"] == PROTOBUF
    assert bus.published == []


def test_single_resource_request_is_the_request_protobuf_would_write() -> None:
    resource_metrics = ResourceMetrics()
    resource_metrics.resource.attributes.add(key="host.name",
                                             value=AnyValue(string_value="x" * 300))
    expected = ExportMetricsServiceRequest(resource_metrics=[resource_metrics])
    framed = single_resource_request(resource_metrics.SerializeToString())
    assert framed == expected.SerializeToString()


def test_status_body_is_a_google_rpc_status() -> None:
    status = status_pb2.Status()
    status.ParseFromString(status_body(3, "résumé " * 40, PROTOBUF))
    assert (status.code, status.message) == (3, "résumé " * 40)
    assert json.loads(status_body(14, "later", JSON)) == {"code": 14, "message": "later"}


# --- bad requests ---------------------------------------------------------------------------


def test_garbage_protobuf_is_400_with_a_status(
    client: httpx.Client, bus: RecordingBus, tally: Tally
) -> None:
    response = _post(client, "/v1/metrics", b"\xff\xff\xff garbage")
    assert response.status_code == 400 and response.headers["content-type"] == PROTOBUF
    status = _status(response)
    assert status.code == 3 and "ExportMetricsServiceRequest in protobuf" in status.message
    assert bus.published == [] and tally.totals()["errored"] == 1


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/v1/metrics", ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord(time_unix_nano=1, severity_text="INFO")])])]).SerializeToString(),
     "metrics[0] has no name"),
    ("/v1/logs", _metrics_request({"host.name": "n"}), "log_records[0] is no log record"),
])
def test_a_body_sent_to_the_other_signal_is_400(
    client: httpx.Client, bus: RecordingBus, path: str, body: bytes, expected: str
) -> None:
    response = _post(client, path, body)
    assert response.status_code == 400 and expected in _status(response).message
    assert bus.published == []


def test_unsupported_content_type_is_415(client: httpx.Client, tally: Tally) -> None:
    response = _post(client, "/v1/metrics", b"up 1", "text/plain")
    assert response.status_code == 415
    assert PROTOBUF in response.json()["message"]
    assert _post(client, "/v1/metrics", b"", PROTOBUF, **{"Content-Encoding": "br"}
                 ).status_code == 415
    assert tally.totals()["errored"] == 2


def test_content_type_parameters_and_case_are_accepted(
    client: httpx.Client, bus: RecordingBus
) -> None:
    body = json.dumps({"resourceMetrics": []}).encode()
    assert _post(client, "/v1/metrics", body, "Application/JSON; charset=utf-8").status_code == 200


def test_oversized_bodies_are_413(client: httpx.Client, bus: RecordingBus, tally: Tally) -> None:
    big = _metrics_request({"host.name": "n"}, n=2000)
    assert len(big) > LIMIT
    assert _post(client, "/v1/metrics", big).status_code == 413
    # Chunked, so no Content-Length to go by: the limit holds while reading.
    chunked = client.post("/v1/metrics", content=iter([big[:LIMIT], big[LIMIT:]]),
                          headers={"Content-Type": PROTOBUF})
    assert chunked.status_code == 413
    # Small on the wire, too big inflated.
    bomb = gzip.compress(b"\x00" * (LIMIT + 1))
    response = _post(client, "/v1/metrics", bomb, PROTOBUF, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "inflates" in _status(response).message
    assert bus.published == [] and tally.totals()["errored"] == 3


def test_gzip_in_process_and_bad_gzip(client: httpx.Client, bus: RecordingBus) -> None:
    body = _metrics_request({"host.name": "gpu-a-004"})
    gz = {"Content-Encoding": "gzip"}
    assert _post(client, "/v1/metrics", gzip.compress(body), PROTOBUF, **gz).status_code == 200
    # Two gzip members, as concatenating compressed files gives.
    halves = gzip.compress(body[:10]) + gzip.compress(body[10:])
    assert _post(client, "/v1/metrics", halves, PROTOBUF, **gz).status_code == 200
    assert [m.value for m in bus.published] == [m.value for m in bus.published[:1]] * 2
    truncated = _post(client, "/v1/metrics", gzip.compress(body)[:-12], PROTOBUF, **gz)
    assert truncated.status_code == 400 and "truncated" in _status(truncated).message
    not_gzip = _post(client, "/v1/metrics", body, PROTOBUF, **gz)
    assert not_gzip.status_code == 400 and "not valid gzip" in _status(not_gzip).message
    undeclared = _post(client, "/v1/metrics", gzip.compress(body))
    assert undeclared.status_code == 400
    assert "Content-Encoding: gzip" in _status(undeclared).message


class _RefusingBus:
    def publish(self, topic: str, value: bytes, key: str | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        raise RuntimeError("producer buffer full")


def test_a_bus_that_refuses_gives_503_which_the_client_retries(tally: Tally) -> None:
    app = build_app(_RefusingBus(), tally.component, DEFAULT_NODE)
    # The app alone, in process: build_app needs no server around it.
    transport = httpx.ASGITransport(app=app)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as http:
            return await http.post("/v1/metrics", content=_metrics_request({"host.name": "n"}, 5),
                                   headers={"Content-Type": PROTOBUF})

    response = anyio.run(post)
    assert response.status_code == 503
    status = _status(response)
    assert status.code == 14 and "producer buffer full" in status.message
    assert tally.totals() == {"received": 5, "sent": 0, "dropped": 0, "errored": 5}


def test_rejections_are_logged_once_per_client_with_the_reason(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vigil.collectors.otlp_receiver"):
        for _ in range(3):
            _post(client, "/v1/logs", b"\xff")
    [record] = caplog.records
    assert record.client.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    assert record.path == "/v1/logs" and record.status == 400  # type: ignore[attr-defined]
    assert "protobuf" in record.reason  # type: ignore[attr-defined]


def test_get_is_not_an_export(client: httpx.Client) -> None:
    assert client.get("/v1/metrics").status_code == 405
    assert client.post("/v1/traces", content=b"").status_code == 404


# --- lifecycle ------------------------------------------------------------------------------


def test_shutdown_without_start_is_safe(bus: RecordingBus) -> None:
    OtlpReceiver(bus, port=0).shutdown()


def test_a_taken_port_fails_start(bus: RecordingBus, receiver: OtlpReceiver) -> None:
    with socket.socket() as probe:  # the receiver's port really is served
        probe.connect(("127.0.0.1", receiver.port))
    with pytest.raises(OSError):
        OtlpReceiver(bus, port=receiver.port).start()
