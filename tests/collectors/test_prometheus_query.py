"""PrometheusQueryCollector: raw samples of a window, each sent once, grouped by node.

The client here answers as Prometheus's query API does for a range selector (a matrix);
tests/integration/test_prometheus.py runs the collector against a real Prometheus."""

from __future__ import annotations

from typing import Any

import pytest
from collector_fakes import RecordingBus, Tally
from prometheus_api_client.exceptions import PrometheusApiClientException
from vigil.collectors.prometheus_query import PrometheusQueryCollector

from vigil.bus import Topic
from vigil.otlp import decode_metrics


class FakePrometheus:
    def __init__(self) -> None:
        self.series: list[dict[str, Any]] = []
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.down = False

    def custom_query(self, query: str, params: dict[str, str],
                     timeout: int | None = None) -> list[dict[str, Any]]:
        self.queries.append((query, params))
        if self.down:
            raise PrometheusApiClientException("HTTP 503: service unavailable")
        return self.series


def temp(host: str, gpu: str, *values: tuple[float, str]) -> dict[str, Any]:
    return {"metric": {"__name__": "DCGM_FI_DEV_GPU_TEMP", "Hostname": host, "gpu": gpu,
                       "instance": "10.0.0.1:9400"},
            "values": [[t, v] for t, v in values]}


@pytest.fixture
def prom() -> FakePrometheus:
    return FakePrometheus()


@pytest.fixture
def collector(prom: FakePrometheus, bus: RecordingBus, tally: Tally) -> PrometheusQueryCollector:
    c = PrometheusQueryCollector(bus, "http://prom:9090", ["DCGM_FI_DEV_GPU_TEMP",
                                                           "node_load1"], interval_s=10.0,
                                 client=prom)  # type: ignore[arg-type]
    c.counters = tally.component
    return c


def test_query_asks_for_the_raw_samples_of_a_window(collector: PrometheusQueryCollector,
                                                     prom: FakePrometheus) -> None:
    collector.collect(1000.0)
    [(query, params)] = prom.queries
    assert query == '{__name__=~"DCGM_FI_DEV_GPU_TEMP|node_load1"}[30000ms]'
    assert params["time"] == "1000.000"


def test_each_sample_goes_once_in_a_batch_per_node(
        collector: PrometheusQueryCollector, prom: FakePrometheus, bus: RecordingBus) -> None:
    prom.series = [temp("a", "0", (990.0, "50"), (995.0, "51")), temp("b", "0", (995.0, "60"))]
    collector.collect(1000.0)
    prom.series = [temp("a", "0", (995.0, "51"), (1005.0, "52")), temp("b", "0", (995.0, "60"))]
    collector.collect(1010.0)
    sent = [(m.key, s.timestamp, s.value, batch.resource["vigil.entity"])
            for m in bus.published if m.topic == Topic.METRICS
            for batch in decode_metrics(m.value) for s in batch.samples]
    assert sent == [("a", 990.0, 50.0, "node:a"), ("a", 995.0, 51.0, "node:a"),
                    ("b", 995.0, 60.0, "node:b"), ("a", 1005.0, 52.0, "node:a")]


def test_node_falls_back_to_instance_without_port(collector: PrometheusQueryCollector,
                                                  prom: FakePrometheus,
                                                  bus: RecordingBus) -> None:
    prom.series = [{"metric": {"__name__": "node_load1", "instance": "gpu-a-001:9100"},
                    "values": [[1.0, "0.5"]]},
                   {"metric": {"__name__": "node_load1"}, "values": [[1.0, "0.5"]]}]
    collector.collect(10.0)
    assert [m.key for m in bus.published] == ["gpu-a-001"]


def test_a_failing_prometheus_is_counted_and_collection_goes_on(
        collector: PrometheusQueryCollector, prom: FakePrometheus, bus: RecordingBus,
        tally: Tally) -> None:
    prom.down = True
    collector.collect(10.0)
    collector.collect(20.0)
    assert tally.totals()["errored"] == 2 and bus.published == []
    prom.down = False
    prom.series = [temp("a", "0", (19.0, "40"))]
    collector.collect(30.0)
    assert len(bus.published) == 1


def test_family_names_are_checked_before_they_reach_a_query() -> None:
    with pytest.raises(ValueError, match="metric family names"):
        PrometheusQueryCollector(RecordingBus(), "http://p", ['up"} or vector(1) #'], 10.0,
                                 client=FakePrometheus())  # type: ignore[arg-type]
