"""OTLP/HTTP receiver: training jobs push metrics and logs straight in with the OpenTelemetry SDK.

`POST /v1/metrics` and `POST /v1/logs` take an Export*ServiceRequest as protobuf or OTLP/JSON,
optionally gzip-compressed, and answer as the OTLP/HTTP specification says: 200 with an empty
Export*ServiceResponse in the request's encoding, 400 with a `google.rpc.Status` saying what
was wrong, 413 for bodies over the limit, 415 for encodings it does not speak, and 503 (which
the SDK retries) when the bus refuses a message.

Each resource of a request travels on as its own Kafka message, the request's protobuf bytes
for that resource unchanged apart from `vigil.entity`, so histograms, exemplars and anything
else a sender includes reach the consumers intact.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request, Response
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from starlette.concurrency import run_in_threadpool
from vigil.collectors import otlp_json
from vigil.collectors.base import Publisher

from vigil.bus import Topic
from vigil.telemetry import ComponentCounters
from vigil.worker import Worker

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# "application/protobuf" is the registered name some newer clients send for the same bytes.
_MEDIA_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_ROUTING_KEYS = frozenset({"host.name", "k8s.node.name", "k8s.pod.name", "k8s.namespace.name",
                           "vigil.entity"})
_REJECTION_LOG_INTERVAL_S = 60.0
# google.rpc.Code values for the error bodies (see `status_body`).
INVALID_ARGUMENT = 3
UNAVAILABLE = 14


class Rejected(Exception):
    """A request the receiver refuses: `status` is the HTTP status, `reason` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Part:
    """One resource's share of a request: what travels on as one Kafka message."""

    resource: Resource
    body: Message  # the ResourceMetrics or ResourceLogs
    items: int  # data points or log records


@dataclass(frozen=True, slots=True)
class _Signal:
    path: str
    topic: Topic
    new_request: Callable[[], Message]
    response: dict[str, bytes]  # the empty Export*ServiceResponse, by media type
    json_key: str  # the request's one field, as OTLP/JSON names it
    parts: Callable[[Message, int], list[Part]]  # (parsed request, receipt time in ns)


def _metric_parts(request: Message, now_ns: int) -> list[Part]:
    """Resources of a metrics request; rejects metrics without a name, as OTLP requires one.

    A logs request also parses as metrics (both requests share their outer layout), and its
    records then become metrics with no name: that check is what catches a misrouted body.
    """
    assert isinstance(request, ExportMetricsServiceRequest)
    parts = []
    for r, resource_metrics in enumerate(request.resource_metrics):
        points = 0
        for s, scope_metrics in enumerate(resource_metrics.scope_metrics):
            for m, metric in enumerate(scope_metrics.metrics):
                if not metric.name:
                    raise Rejected(400, f"resource_metrics[{r}].scope_metrics[{s}].metrics[{m}]"
                                        f" has no name (a logs request sent to /v1/metrics?)")
                points += _points(metric)
        parts.append(Part(resource_metrics.resource, resource_metrics, points))
    return parts


def _log_parts(request: Message, now_ns: int) -> list[Part]:
    """Resources of a logs request; records without any timestamp get `now_ns` as observed.

    The observed time is by definition when a collection system first saw the record, which
    for a record that arrives without one is this receiver. Such a record that also carries
    fields this OTLP version does not know is a metric of a misrouted metrics request.
    """
    assert isinstance(request, ExportLogsServiceRequest)
    parts = []
    for r, resource_logs in enumerate(request.resource_logs):
        records = 0
        for s, scope_logs in enumerate(resource_logs.scope_logs):
            for i, record in enumerate(scope_logs.log_records):
                if not record.time_unix_nano and not record.observed_time_unix_nano:
                    if len(unknown_fields.UnknownFieldSet(record)):
                        raise Rejected(400, f"resource_logs[{r}].scope_logs[{s}].log_records[{i}]"
                                            f" is no log record (a metrics request sent to "
                                            f"/v1/logs?)")
                    record.observed_time_unix_nano = now_ns
            records += len(scope_logs.log_records)
        parts.append(Part(resource_logs.resource, resource_logs, records))
    return parts


def _points(metric: Metric) -> int:
    match metric.WhichOneof("data"):
        case "gauge":
            return len(metric.gauge.data_points)
        case "sum":
            return len(metric.sum.data_points)
        case "histogram":
            return len(metric.histogram.data_points)
        case "exponential_histogram":
            return len(metric.exponential_histogram.data_points)
        case "summary":
            return len(metric.summary.data_points)
        case _:
            return 0


def _encoded(response: Message) -> dict[str, bytes]:
    return {PROTOBUF: response.SerializeToString(), JSON: otlp_json.render(response)}


_SIGNALS = (
    _Signal("/v1/metrics", Topic.METRICS, ExportMetricsServiceRequest,
            _encoded(ExportMetricsServiceResponse()), "resourceMetrics", _metric_parts),
    _Signal("/v1/logs", Topic.LOGS, ExportLogsServiceRequest,
            _encoded(ExportLogsServiceResponse()), "resourceLogs", _log_parts),
)


def route(resource: Resource, default_node: str) -> str:
    """The Kafka key for a resource (its node); adds `vigil.entity` when the sender did not.

    The node is `host.name`, else `k8s.node.name`, else `default_node`. The entity is the pod
    when the resource names one (`pod:<namespace>/<name>`), else the node.
    """
    found = {kv.key: kv.value.string_value for kv in resource.attributes
             if kv.key in _ROUTING_KEYS}
    node = found.get("host.name") or found.get("k8s.node.name") or default_node
    if "vigil.entity" not in found:
        pod, namespace = found.get("k8s.pod.name"), found.get("k8s.namespace.name")
        entity = f"pod:{namespace}/{pod}" if pod and namespace else f"node:{node}"
        resource.attributes.append(KeyValue(key="vigil.entity",
                                            value=AnyValue(string_value=entity)))
    return node


def single_resource_request(resource_bytes: bytes) -> bytes:
    """An Export*ServiceRequest holding one serialised ResourceMetrics or ResourceLogs.

    Both requests keep their resources in field 1, so the request is that field's tag, the
    length, and the bytes: no copy of the (possibly large) resource message is made.
    """
    return b"\x0a" + _varint(len(resource_bytes)) + resource_bytes  # field 1, length-delimited


def status_body(code: int, message: str, media: str) -> bytes:
    """A `google.rpc.Status`, the error body OTLP/HTTP asks for, in the request's encoding.

    Its wire form is two scalar fields, code (1, varint) and message (2, string), so it is
    written here rather than taking on the googleapis protos as a dependency for it.
    """
    if media == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body (all its members), refusing to inflate past `limit` bytes."""
    out: list[bytes] = []
    size = 0
    rest = body
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer
        try:
            chunk = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            raise Rejected(400, f"body is not valid gzip: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body inflates to over the limit of {limit} bytes")
        if not inflater.eof:
            raise Rejected(400, "gzip body is truncated")
        out.append(chunk)
        rest = inflater.unused_data
    return b"".join(out)


class _RejectionLog:
    """Logs a client's first rejection, then at most one a minute, with the count held back.

    A receiver faces every misconfigured client of a cluster; one line per bad request from
    a client retrying in a loop would bury everything else in the log.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}  # client host -> (logged at, held back)

    def note(self, client: str, path: str, status: int, reason: str) -> None:
        host = client.rsplit(":", 1)[0]
        now = time.monotonic()
        logged_at, held_back = self._last.get(host, (-_REJECTION_LOG_INTERVAL_S, 0))
        if now - logged_at < _REJECTION_LOG_INTERVAL_S:
            self._last[host] = (logged_at, held_back + 1)
            return
        if len(self._last) > 10_000:  # many clients: forget them rather than grow forever
            self._last.clear()
        self._last[host] = (now, 0)
        log.warning("otlp request rejected", extra={"client": client, "path": path,
                                                    "status": status, "reason": reason,
                                                    "rejections_not_logged": held_back})


class _Intake:
    """What each endpoint does: read, check, decode, split per resource, publish, answer."""

    def __init__(self, publisher: Publisher, counters: ComponentCounters, max_body_bytes: int,
                 default_node: str) -> None:
        self.publisher = publisher
        self.counters = counters
        self.max_body_bytes = max_body_bytes
        self.default_node = default_node
        self.rejections = _RejectionLog()

    def endpoint(self, signal: _Signal) -> Callable[[Request], Awaitable[Response]]:
        async def export(request: Request) -> Response:
            return await self.handle(request, signal)

        return export

    async def handle(self, request: Request, signal: _Signal) -> Response:
        media = _MEDIA_TYPES.get(_media_type(request.headers.get("content-type")))
        try:
            if media is None:
                raise Rejected(415, f"Content-Type {request.headers.get('content-type')!r} is "
                                    f"not supported: send {PROTOBUF} or {JSON}")
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("gzip", "identity", ""):
                raise Rejected(415, f"Content-Encoding {encoding!r} is not supported: send gzip "
                                    f"or no encoding")
            body = await self._read_body(request)
            if encoding == "gzip":
                body = gunzip(body, self.max_body_bytes)
            # Off the event loop: publishing may block while the producer's buffer is full.
            await run_in_threadpool(self.accept, body, media, signal)
        except Rejected as rejection:
            client = f"{request.client.host}:{request.client.port}" if request.client else "?"
            if rejection.status != 503:  # a refused publish counted its items already
                self.counters.add_errored()
            self.rejections.note(client, signal.path, rejection.status, rejection.reason)
            code = UNAVAILABLE if rejection.status == 503 else INVALID_ARGUMENT
            media = media or JSON  # a client whose encoding is unknown gets the readable one
            return Response(status_body(code, rejection.reason, media),
                            status_code=rejection.status, media_type=media)
        return Response(signal.response[media], media_type=media)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Rejected(413, f"body of {declared} bytes is over the limit of {limit} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def accept(self, body: bytes, media: str, signal: _Signal) -> None:
        parsed = signal.new_request()
        if media == JSON:
            try:
                otlp_json.parse(body, parsed, signal.json_key)
            except otlp_json.OtlpJsonError as exc:
                raise Rejected(400, str(exc)) from None
        else:
            try:
                parsed.ParseFromString(body)
            except DecodeError as exc:
                gzipped = body.startswith(b"\x1f\x8b")
                hint = " (it looks gzip-compressed: set Content-Encoding: gzip)" if gzipped else ""
                raise Rejected(400, f"body is not an OTLP {parsed.DESCRIPTOR.name} in "
                                    f"protobuf: {exc}{hint}") from None
        parts = signal.parts(parsed, time.time_ns())
        self.counters.add_received(sum(part.items for part in parts))
        self.publish(parts, signal.topic)

    def publish(self, parts: Sequence[Part], topic: Topic) -> None:
        for n, part in enumerate(parts):
            key = route(part.resource, self.default_node)
            payload = single_resource_request(part.body.SerializeToString())
            try:
                self.publisher.publish(topic, payload, key=key)
            except Exception as exc:  # any bus failure: the client retries, nothing is lost
                self.counters.add_errored(sum(p.items for p in parts[n:]))
                raise Rejected(503, f"the bus refused the batch, retry later: {exc}") from None
            self.counters.add_sent(part.items)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def build_app(publisher: Publisher, counters: ComponentCounters, default_node: str,
              max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The receiver's ASGI app, with no server around it (tests drive it in process)."""
    intake = _Intake(publisher, counters, max_body_bytes, default_node)
    # No OpenAPI pages: this port faces telemetry senders, not people.
    app = FastAPI(title="Vigil OTLP receiver", docs_url=None, redoc_url=None, openapi_url=None)
    for signal in _SIGNALS:
        app.add_api_route(signal.path, intake.endpoint(signal), methods=["POST"])
    return app


class OtlpReceiver(Worker):
    """Serves `build_app` with uvicorn in a background thread.

    `start()` binds and listens before it returns, so a taken port fails start-up and `port`
    is the real one when 0 was asked for; requests that arrive before the server's loop runs
    wait in the listen backlog. Re-published messages count as sent; rejected requests (one
    each) and items the bus refused count as errored.
    """

    def __init__(self, publisher: Publisher, host: str = "127.0.0.1", port: int = 4318,
                 default_node: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, name: str = "otlp_receiver"
                 ) -> None:
        super().__init__(name)
        self.publisher = publisher
        self.host = host
        self.port = port
        self.default_node = default_node or socket.gethostname()
        self.max_body_bytes = max_body_bytes
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None

    def start(self) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(1024)
        except OSError:
            listener.close()
            raise
        self._socket = listener
        self.port = int(listener.getsockname()[1])
        app = build_app(self.publisher, self.counters, self.default_node, self.max_body_bytes)
        # Logging stays Vigil's (no log_config), no line per request, no lifespan to wait on.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        super().start()
        log.info("otlp receiver listening", extra={"host": self.host, "port": self.port})

    def run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except Exception:  # the thread's end is the receiver's end: say why
            log.exception("otlp receiver stopped", extra={"port": self.port})

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        super().shutdown()
        if self._socket is not None:
            self._socket.close()
