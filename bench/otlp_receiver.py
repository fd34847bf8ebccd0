"""How many requests and data points per second the OTLP/HTTP receiver takes in.

Serves the real receiver (FastAPI under uvicorn, on loopback) and has client processes post
one pre-encoded metrics request of --points data points over keep-alive connections for
--seconds, as protobuf, gzip-compressed protobuf and OTLP/JSON. Clients run in their own
processes so that they do not share the receiver's interpreter lock, and the receiver's own
CPU time per request is reported beside the rates: on a shared machine it varies far less
than they do. By default the receiver publishes to a counting stand-in for Kafka, so the
figures are the receiver's own; --kafka publishes to the embedded broker instead (the
producer's background thread then counts as receiver CPU) and includes the final flush.
Prints figures; asserts nothing.

    .venv/bin/python bench/otlp_receiver.py --points 1000 --seconds 5 --clients 1 2 [--json]
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
from figures import print_figures  # bench/, this script's own folder
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from vigil.collectors.base import Publisher
from vigil.collectors.otlp_receiver import JSON, PROTOBUF, OtlpReceiver

from vigil.broker import EmbeddedBroker
from vigil.bus import Bus
from vigil.otlp import MetricBatch, MetricSample, encode_metrics
from vigil.settings import KafkaSettings

GPUS = 8


class CountingPublisher:
    """Stands in for the bus: counts messages and bytes, keeps nothing."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def publish(self, topic: str, value: bytes, key: str | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        with self._lock:
            self.messages += 1
            self.bytes += len(value)


def request_body(points: int) -> bytes:
    """One node's scrape-like batch: `points` gauges spread over GPUS GPUs."""
    now = time.time()
    samples = [MetricSample(f"DCGM_FI_DEV_FIELD_{i // GPUS}", float(i),
                            {"gpu": str(i % GPUS), "UUID": f"GPU-{i % GPUS:08x}"}, now)
               for i in range(points)]
    return encode_metrics([MetricBatch({"host.name": "gpu-a-001", "service.name": "bench"},
                                       samples)])


def _client(url: str, body: bytes, headers: dict[str, str], seconds: float,
            ready: Queue[None], go: Event, results: Queue[tuple[int, int, float]]) -> None:
    ok = failed = 0
    busy = 0.0
    with httpx.Client(timeout=30) as http:
        ready.put(None)
        go.wait()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                answered = http.post(url, content=body, headers=headers).status_code == 200
            except httpx.HTTPError:
                answered = False
            busy += time.monotonic() - started
            ok, failed = (ok + 1, failed) if answered else (ok, failed + 1)
    results.put((ok, failed, busy))


def _run_case(receiver: OtlpReceiver, body: bytes, headers: dict[str, str], clients: int,
              seconds: float, flush: object) -> tuple[int, int, float, float, float]:
    """Requests answered 200 and not, wall seconds, mean latency (ms), receiver CPU seconds."""
    # Spawned, not forked: forking a process whose server threads may hold locks can hang
    # the child. Clients start, report ready, and all begin together on `go`.
    context = multiprocessing.get_context("spawn")
    ready: Queue[None] = context.Queue()
    results: Queue[tuple[int, int, float]] = context.Queue()
    go = context.Event()
    url = f"http://127.0.0.1:{receiver.port}/v1/metrics"
    workers = [context.Process(target=_client,
                               args=(url, body, headers, seconds, ready, go, results))
               for _ in range(clients)]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    started = time.monotonic()
    cpu_started = time.process_time()  # this process is the receiver; clients have their own
    go.set()
    totals = [results.get(timeout=seconds + 120) for _ in workers]
    if callable(flush):
        flush()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    for worker in workers:
        worker.join()
    ok = sum(t[0] for t in totals)
    failed = sum(t[1] for t in totals)
    latency_ms = 1000 * sum(t[2] for t in totals) / max(1, ok + failed)
    return ok, failed, elapsed, latency_ms, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=1000, help="data points per request")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2],
                        help="concurrent client processes, one case per value")
    parser.add_argument("--kafka", action="store_true", help="publish to the embedded broker")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    os.environ["no_proxy"] = "*"  # loopback, never through a proxy

    body = request_body(args.points)
    json_body = json_format.MessageToJson(_parsed(body), indent=None).encode()
    cases = {
        "protobuf": (body, {"Content-Type": PROTOBUF}),
        "protobuf_gzip": (gzip.compress(body, compresslevel=1),
                          {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}),
        "json": (json_body, {"Content-Type": JSON}),
    }
    figures: dict[str, object] = {
        "points_per_request": args.points, "protobuf_bytes": len(body),
        "gzip_bytes": len(cases["protobuf_gzip"][0]), "json_bytes": len(json_body),
        "cpus": os.cpu_count(), "publisher": "embedded kafka" if args.kafka else "counting",
    }
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        broker = EmbeddedBroker(Path(tmp) / "broker.log") if args.kafka else None
        publisher: Publisher
        flush: object = None
        if broker is not None:
            broker.start()
            bus = Bus(broker.bootstrap, KafkaSettings())
            bus.ensure_topics()
            publisher, flush = bus, bus.flush
        else:
            publisher = CountingPublisher()
        receiver = OtlpReceiver(publisher, port=0, default_node="bench")
        receiver.start()
        try:
            for name, (payload, headers) in cases.items():
                for clients in args.clients:
                    ok, failed, elapsed, latency_ms, cpu = _run_case(
                        receiver, payload, headers, clients, args.seconds, flush)
                    prefix = f"{name}_c{clients}"
                    figures[f"{prefix}_requests_per_s"] = round(ok / elapsed, 1)
                    figures[f"{prefix}_points_per_s"] = round(ok * args.points / elapsed)
                    figures[f"{prefix}_mean_latency_ms"] = round(latency_ms, 2)
                    figures[f"{prefix}_receiver_cpu_ms_per_request"] = round(
                        1000 * cpu / max(1, ok), 2)
                    if failed:
                        figures[f"{prefix}_failed_requests"] = failed
        finally:
            receiver.shutdown()
            if broker is not None:
                bus.close()
                broker.shutdown()
    print_figures(figures, args.json)


def _parsed(body: bytes) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    return request


if __name__ == "__main__":
    main()
