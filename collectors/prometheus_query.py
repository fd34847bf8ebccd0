"""Pulls metric families out of an existing Prometheus, for sites whose exporters it scrapes.

Each interval asks one instant query per family group for a range selector,
``{__name__=~"A|B"}[window]``: Prometheus answers with the raw samples of the window, each
with its own scrape timestamp. Publishing only samples newer than the last one sent for
their series gives every scraped sample exactly once (a window longer than the interval
covers a late or slow query), and handles staleness the way Prometheus does: a series whose
target vanished has no samples in the window, so it stops, instead of repeating its last
value as an instant query would for up to five minutes.

Samples are grouped by node (the first of `node_labels` a series carries; ``instance``
loses its port) into one OTLP batch per node, keyed by node.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.exceptions import RequestException
from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.identity import tag_samples
from vigil.topology.identity import EntityResolver

from vigil.bus import Topic
from vigil.otlp import MetricBatch, MetricKind, MetricSample, encode_metrics

log = logging.getLogger(__name__)

DEFAULT_NODE_LABELS = ("Hostname", "node", "instance", "host")
_FAMILY = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MAX_SERIES_MEMORY = 1_000_000  # series whose last timestamp is remembered, at most


class PrometheusQueryCollector(PollingCollector):
    def __init__(
        self, publisher: Publisher, url: str, families: Sequence[str], interval_s: float,
        window_s: float | None = None, node_labels: Sequence[str] = DEFAULT_NODE_LABELS,
        timeout_s: float = 10.0, name: str = "prometheus_query",
        client: PrometheusConnect | None = None,
    ) -> None:
        super().__init__(name, interval_s)
        self._resolver = EntityResolver()  # no graph on a node: ids built as the inventory does
        bad = [f for f in families if not _FAMILY.fullmatch(f)]
        if bad or not families:
            raise ValueError(f"metric family names must match {_FAMILY.pattern}: "
                             f"{', '.join(map(repr, bad)) or 'none given'}")
        self.publisher = publisher
        self.url = url
        self.families = list(families)
        self.window_s = window_s if window_s is not None else max(2 * interval_s, 30.0)
        self.node_labels = tuple(node_labels)
        self.timeout_s = timeout_s
        self.client = client or PrometheusConnect(url=url, disable_ssl=False)
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._failing = False

    @property
    def query(self) -> str:
        names = "|".join(re.escape(f) for f in self.families)
        return f'{{__name__=~"{names}"}}[{int(self.window_s * 1000)}ms]'

    def collect(self, now: float) -> None:
        try:
            result = self.client.custom_query(query=self.query, params={
                "time": f"{now:.3f}", "timeout": f"{int(self.timeout_s * 1000)}ms"},
                timeout=int(self.timeout_s) + 1)
        except (PrometheusApiClientException, RequestException, ValueError) as exc:
            self.counters.add_errored()
            if not self._failing:
                log.warning("prometheus query failed", extra={"url": self.url,
                                                              "error": str(exc)})
                self._failing = True
            return
        if self._failing:
            log.info("prometheus query recovered", extra={"url": self.url})
            self._failing = False
        by_node = self._new_samples(result)
        for node, samples in by_node.items():
            batch = MetricBatch(resource={"host.name": node, "vigil.entity": f"node:{node}",
                                          "url.full": self.url},
                                samples=tag_samples(samples, node, self._resolver))
            self.publisher.publish(Topic.METRICS, encode_metrics([batch]), key=node)
            self.counters.add_sent(len(samples))
        if len(self._last) > _MAX_SERIES_MEMORY:  # churned series: forget, resend at most once
            self._last.clear()

    def _new_samples(self, result: Iterable[Mapping[str, Any]]) -> dict[str, list[MetricSample]]:
        by_node: dict[str, list[MetricSample]] = {}
        for series in result:
            labels = dict(series.get("metric", {}))
            name = labels.pop("__name__", "")
            node = self._node(labels)
            values = series.get("values", [])
            self.counters.add_received(len(values))
            if not name or node is None:
                self.counters.add_dropped(len(values))
                continue
            key = (name, tuple(sorted(labels.items())))
            last = self._last.get(key, float("-inf"))
            fresh = []
            for stamp, text in values:
                stamp = float(stamp)
                if stamp > last:
                    fresh.append(MetricSample(name=name, value=float(text), labels=labels,
                                              timestamp=stamp, kind=_kind(name)))
            if fresh:
                self._last[key] = fresh[-1].timestamp
                by_node.setdefault(node, []).extend(fresh)
        return by_node

    def _node(self, labels: Mapping[str, str]) -> str | None:
        for label in self.node_labels:
            value = labels.get(label)
            if value:
                return _without_port(value) if label == "instance" else value
        return None


def _kind(name: str) -> MetricKind:
    # Prometheus's API does not say a series' type; its naming rules do.
    return "counter" if name.endswith(("_total", "_count", "_sum")) else "gauge"


def _without_port(instance: str) -> str:
    host, sep, port = instance.rpartition(":")
    if sep and port.isdigit() and host:
        return host.strip("[]")
    return instance
