"""A real Prometheus (Debian's package) scrapes what Vigil serves: the simulator's
dcgm-exporter-shaped endpoints, and Vigil's own OpenTelemetry counters."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator

import pytest
import yaml
from prometheus_api_client import PrometheusConnect
from running import RunningVigil
from vigil.collectors.prometheus_query import PrometheusQueryCollector

from vigil.broker import free_port
from vigil.otlp import decode_metrics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(vigil_up: RunningVigil, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed; run deploy/setup.sh --dev")
    work = tmp_path_factory.mktemp("prometheus")
    sim = urllib.parse.urlsplit(vigil_up.state.sim_url or "")
    own = urllib.parse.urlsplit(vigil_up.state.metrics_url or "")
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": f"dcgm-{node}", "metrics_path": f"/nodes/{node}/metrics",
             "static_configs": [{"targets": [sim.netloc], "labels": {"node": node}}]}
            for node in ("gpu-a-001", "gpu-a-002")
        ] + [{"job_name": "vigil", "static_configs": [{"targets": [own.netloc]}]}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(work / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        client = PrometheusConnect(url=url, disable_ssl=True)
        deadline = time.monotonic() + 30
        while not _ready(client):
            if time.monotonic() > deadline or process.poll() is not None:
                log = (work / "prometheus.log").read_text()
                pytest.fail(f"Prometheus did not start: {log}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _ready(client: PrometheusConnect) -> bool:
    try:
        return bool(client.check_prometheus_connection())
    except Exception:
        return False


def _query_until(client: PrometheusConnect, query: str, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = client.custom_query(query)
        if result:
            return list(result)
        time.sleep(0.5)
    raise AssertionError(f"Prometheus has no data for {query!r} after {timeout_s} s")


def test_prometheus_scrapes_the_simulated_dcgm_exporter(prometheus: str) -> None:
    client = PrometheusConnect(url=prometheus, disable_ssl=True)
    temps = _query_until(client, 'DCGM_FI_DEV_GPU_TEMP{node="gpu-a-001"}')
    assert len(temps) == 8
    assert {r["metric"]["Hostname"] for r in temps} == {"gpu-a-001"}
    assert all(30 < float(r["value"][1]) < 100 for r in temps)


def test_prometheus_reads_vigils_own_counters(prometheus: str) -> None:
    client = PrometheusConnect(url=prometheus, disable_ssl=True)
    rows = _query_until(client, 'vigil_component_received_total{component="detect"} > 0')
    assert float(rows[0]["value"][1]) > 0
    sent = _query_until(client, 'vigil_component_sent_total{component="prometheus_scrape"}')
    assert float(sent[0]["value"][1]) > 0


class _Recorder:
    """Keeps what a collector publishes (the Kafka side is tested elsewhere)."""

    def __init__(self) -> None:
        self.published: list[tuple[str | None, bytes]] = []

    def publish(self, topic: str, value: bytes, key: str | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        self.published.append((key, value))


def test_query_collector_pulls_each_scraped_sample_once(prometheus: str) -> None:
    """PrometheusQueryCollector against the real Prometheus: per-node batches of raw samples
    with their scrape times, none repeated across polls."""
    client = PrometheusConnect(url=prometheus, disable_ssl=True)
    _query_until(client, 'DCGM_FI_DEV_GPU_TEMP{node="gpu-a-002"}')
    bus = _Recorder()
    collector = PrometheusQueryCollector(bus, prometheus, ["DCGM_FI_DEV_GPU_TEMP"],
                                         interval_s=1.0)
    collector.collect(time.time())
    time.sleep(2.5)  # two more scrapes at the 1 s interval
    collector.collect(time.time())
    seen: dict[tuple[str, str], list[float]] = {}
    for key, value in bus.published:
        for batch in decode_metrics(value):
            assert key == batch.resource["host.name"]
            for sample in batch.samples:
                seen.setdefault((key or "", sample.labels["gpu"]), []).append(
                    sample.timestamp)
    assert {node for node, _ in seen} == {"gpu-a-001", "gpu-a-002"}
    assert len(seen) == 16  # 8 GPUs on each node
    for stamps in seen.values():
        assert stamps == sorted(set(stamps)), "a sample was sent twice or out of order"
        assert len(stamps) >= 3
