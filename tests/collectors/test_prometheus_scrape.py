"""Tests for the Prometheus scrape collector: exposition parsing and one OTLP batch per target."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from collector_fakes import RecordingBus, Tally, as_exported
from prometheus_client.parser import text_string_to_metric_families
from vigil.collectors.prometheus_scrape import (
    PrometheusScrapeCollector,
    ScrapeTarget,
    parse_exposition,
)
from vigil.sim.server import SimServer
from vigil.sim.telemetry import GPU_FAMILIES, NIC_FAMILIES

from vigil.otlp import MetricSample, decode_metrics

NOW = 1_718_000_030.0
DATA = Path(__file__).parent / "data"
NODES = ("gpu-a-001", "gpu-a-002")

MakeCollector = Callable[[list[ScrapeTarget]], PrometheusScrapeCollector]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib honours *_proxy variables; the loopback servers here must be reached directly.
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def make_collector(bus: RecordingBus, tally: Tally) -> Iterator[MakeCollector]:
    made: list[PrometheusScrapeCollector] = []

    def make(targets: list[ScrapeTarget]) -> PrometheusScrapeCollector:
        collector = PrometheusScrapeCollector(bus, targets, interval_s=3600.0,
                                              timeout_s=2.0)
        collector.counters = tally.component
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.shutdown()


@pytest.fixture(scope="module")
def not_an_exposition() -> Iterator[str]:
    """URL of a loopback server that answers 200 with an HTML page, as a misrouted proxy would."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Welcome to nginx!</body></html>\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _target(server: SimServer, node: str) -> ScrapeTarget:
    return ScrapeTarget(url=f"{server.url}/nodes/{node}/metrics", node=node)


# --- parse_exposition ---------------------------------------------------------------------


def test_parse_keeps_gauges_counters_and_untyped_samples() -> None:
    samples = parse_exposition((DATA / "mixed_exposition.prom").read_text(), NOW)

    assert samples == [
        MetricSample("node_hwmon_temp_celsius", 54.0,
                     {"chip": "platform_coretemp_0", "sensor": "temp1"}, NOW, "gauge"),
        # An explicit exposition timestamp (milliseconds) wins over the scrape time.
        MetricSample("node_hwmon_temp_celsius", 51.5,
                     {"chip": "platform_coretemp_0", "sensor": "temp2"}, 1_718_000_000.25, "gauge"),
        MetricSample("node_infiniband_link_downed_total", 4.0,
                     {"device": "mlx5_0", "port": "1"}, NOW, "counter"),
        # Named as written: prometheus_client's parser would add a _total suffix here.
        MetricSample("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 2.0,
                     {"gpu": "3", "pci_bus_id": "00000000:5D:00.0"}, NOW, "counter"),
        MetricSample("node_textfile_scrape_error", 0.0, {}, NOW, "gauge"),
        MetricSample("vigil_component_received_total", 25.0, {"component": "log_file"}, NOW,
                     "counter"),
    ]


def test_parse_skips_histograms_summaries_and_created_times() -> None:
    names = {s.name for s in parse_exposition((DATA / "mixed_exposition.prom").read_text(), NOW)}

    assert not {n for n in names if n.startswith(("node_disk_io_time_seconds", "go_gc_"))}
    assert not {n for n in names if n.endswith("_created")}


def test_parse_of_an_empty_exposition_is_empty() -> None:
    assert parse_exposition("", NOW) == []


@pytest.mark.parametrize(
    "text", ["<html><body>404</body></html>\n", 'DCGM_FI_DEV_GPU_TEMP{gpu="0" 54\n']
)
def test_parse_of_something_else_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_exposition(text, NOW)


def test_parse_of_the_simulator_exposition_has_every_gpu_sample(sim_server: SimServer) -> None:
    text = sim_server.cluster.exposition("gpu-a-001")

    samples = parse_exposition(text, NOW)

    families = list(text_string_to_metric_families(text))
    assert len(samples) == sum(len(f.samples) for f in families)
    kinds = {s.name: s.kind for s in samples}
    for metric, kind, *_ in GPU_FAMILIES:
        assert kinds[metric] == kind  # dcgm-exporter names, as written


# --- the collector ------------------------------------------------------------------------


def test_collect_publishes_one_batch_per_target_keyed_by_node(
    sim_server: SimServer, make_collector: MakeCollector, bus: RecordingBus, tally: Tally
) -> None:
    targets = [_target(sim_server, node) for node in NODES]

    make_collector(targets).collect(NOW)

    assert [(p.topic, p.key, p.headers) for p in bus.published] == [
        ("vigil.metrics", node, None) for node in NODES
    ]
    for message, target in zip(bus.published, targets, strict=True):
        (batch,) = decode_metrics(message.value)
        assert batch.resource == {
            "host.name": target.node, "vigil.entity": f"node:{target.node}",
            "service.name": "dcgm-exporter", "url.full": target.url,
        }
        parsed = parse_exposition(sim_server.cluster.exposition(target.node), NOW)
        # Each GPU's sample names its GPU; otherwise what was scraped goes as it was.
        assert [s.labels.pop("vigil.entity") for s in batch.samples] == [
            f"gpu:{target.node}/{s.labels['gpu']}" for s in parsed]
        assert batch.samples == parsed
        assert len(batch.samples) == len(GPU_FAMILIES) * 8
        assert {s.labels["Hostname"] for s in batch.samples} == {target.node}
    per_node = len(GPU_FAMILIES) * 8
    assert tally.totals() == {"received": 2 * per_node, "sent": 2 * per_node, "dropped": 0,
                              "errored": 0}


def test_collect_sends_the_dcgm_labels_the_log_detector_needs(
    sim_server: SimServer, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    make_collector([_target(sim_server, "gpu-a-002")]).collect(NOW)

    (batch,) = decode_metrics(bus.published[0].value)
    temps = {s.labels["gpu"]: s.labels for s in batch.samples if s.name == "DCGM_FI_DEV_GPU_TEMP"}
    assert temps["5"]["pci_bus_id"] == "00000000:AB:00.0"
    assert temps["5"]["UUID"].startswith("GPU-")


def test_each_collect_scrapes_afresh(
    sim_server: SimServer, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    collector = make_collector([_target(sim_server, "gpu-a-001")])
    collector.collect(NOW)
    sim_server.cluster.step(NOW + 15)
    collector.collect(NOW + 15)

    first, second = (decode_metrics(p.value)[0].samples for p in bus.published)
    assert {s.timestamp for s in first} == {NOW}
    assert {s.timestamp for s in second} == {NOW + 15}
    assert as_exported(second) == parse_exposition(
        sim_server.cluster.exposition("gpu-a-001"), NOW + 15)
    assert [s.value for s in first] != [s.value for s in second]


@pytest.mark.parametrize("failure", ["refused", "http 404", "not an exposition"])
def test_a_failing_target_is_counted_and_the_others_still_publish(
    sim_server: SimServer, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    not_an_exposition: str, failure: str,
) -> None:
    bad_url = {
        "refused": f"http://127.0.0.1:{_closed_port()}/metrics",
        "http 404": f"{sim_server.url}/nodes/gpu-z-999/metrics",
        "not an exposition": not_an_exposition,
    }[failure]
    targets = [_target(sim_server, "gpu-a-001"), ScrapeTarget(bad_url, "gpu-z-999"),
               _target(sim_server, "gpu-a-002")]

    make_collector(targets).collect(NOW)

    assert [p.key for p in bus.published] == ["gpu-a-001", "gpu-a-002"]
    per_node = len(GPU_FAMILIES) * 8
    assert tally.totals() == {"received": 2 * per_node, "sent": 2 * per_node, "dropped": 0,
                              "errored": 1}


def test_every_simulated_exporter_is_scraped_under_its_service_name(
    sim_server: SimServer, make_collector: MakeCollector, bus: RecordingBus
) -> None:
    cluster, url = sim_server.cluster, sim_server.url
    targets = [
        ScrapeTarget(f"{url}/nodes/gpu-a-001/node-exporter/metrics", "gpu-a-001", "node-exporter"),
        ScrapeTarget(f"{url}/nodes/gpu-a-001/trainer/metrics", "gpu-a-001", "trainer"),
        ScrapeTarget(f"{url}/storage/pfs-1/metrics", "pfs-1", "storage"),
    ]

    make_collector(targets).collect(NOW)

    texts = [cluster.node_exporter("gpu-a-001"), cluster.trainer("gpu-a-001"),
             cluster.storage("pfs-1")]
    assert len(bus.published) == 3
    for message, target, text in zip(bus.published, targets, texts, strict=True):
        (batch,) = decode_metrics(message.value)
        assert batch.resource["service.name"] == target.service
        assert as_exported(batch.samples) == parse_exposition(text or "", NOW)
    node_exporter = decode_metrics(bus.published[0].value)[0].samples
    kinds = {s.name: s.kind for s in node_exporter}
    for metric, kind, *_ in NIC_FAMILIES:  # node-exporter names, _total as written
        assert kinds[metric] == kind
    trainer = {s.name: s.kind for s in decode_metrics(bus.published[1].value)[0].samples}
    assert trainer["training_iteration"] == "counter"  # no _total added


def test_an_unreachable_node_is_an_error_said_once_until_it_recovers(
    sim_server: SimServer, make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = sim_server.cluster
    collector = make_collector([_target(sim_server, node) for node in NODES])
    cluster.inject("sched.slurm.node_not_responding", "node:gpu-a-002", NOW)
    try:
        with caplog.at_level("INFO", logger="vigil.collectors.prometheus_scrape"):
            collector.collect(NOW)
            collector.collect(NOW + 15)  # 503 again: counted, not logged again
            cluster.heal_all(NOW + 20)
            collector.collect(NOW + 30)
    finally:
        cluster.heal_all(NOW + 30)

    assert [p.key for p in bus.published] == ["gpu-a-001", "gpu-a-001", "gpu-a-001", "gpu-a-002"]
    assert tally.totals()["errored"] == 2
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said == [("WARNING", "scrape failed"), ("INFO", "scrape recovered")]
    assert caplog.records[0].url == _target(sim_server, "gpu-a-002").url  # type: ignore[attr-defined]


def test_shutdown_without_start_is_safe(make_collector: MakeCollector) -> None:
    collector = make_collector([ScrapeTarget("http://127.0.0.1:9/metrics", "n1")])

    collector.shutdown()
    collector.shutdown()
