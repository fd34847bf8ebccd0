"""Scrapes Prometheus exposition endpoints (dcgm-exporter, node-exporter) into OTLP batches."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families
from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.identity import tag_samples
from vigil.topology.identity import EntityResolver

from vigil.bus import Topic
from vigil.otlp import MetricBatch, MetricSample, encode_metrics

log = logging.getLogger(__name__)

# Exposition sample suffixes that belong to histograms and summaries, which this collector skips.
_COUNTER_TYPES = {"counter"}
_KEPT_TYPES = {"gauge", "counter", "untyped", "unknown"}


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    url: str
    node: str  # the host the endpoint describes; becomes host.name and the Kafka key
    service: str = "dcgm-exporter"  # the exporter, as OTel's service.name


def parse_exposition(text: str, now: float) -> list[MetricSample]:
    """Gauges and counters of a Prometheus text exposition as samples stamped `now`."""
    samples: list[MetricSample] = []
    for family in text_string_to_metric_families(text):
        if family.type not in _KEPT_TYPES:
            continue
        kind: Literal["gauge", "counter"] = (
            "counter" if family.type in _COUNTER_TYPES else "gauge"
        )
        total = _written_total(family.name, text) if kind == "counter" else ""
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            samples.append(MetricSample(
                name=total or s.name, value=float(s.value), labels=s.labels,
                timestamp=float(s.timestamp) if s.timestamp is not None else now, kind=kind,
            ))
    return samples


def _written_total(family: str, text: str) -> str:
    """The name a counter family's samples were written under, when the parser renames them.

    prometheus_client's parser appends `_total` to every counter sample, so dcgm-exporter's
    `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL` would become `..._TOTAL_total`; Prometheus itself keeps
    names as written, and so do we. Returns "" when the parser's name is the written one.
    """
    suffixed = family + "_total"
    for follow in ("{", " "):
        if f"\n{suffixed}{follow}" in text or text.startswith(suffixed + follow):
            return ""
    return family


class PrometheusScrapeCollector(PollingCollector):
    """Every interval, fetch each target's /metrics and publish one OTLP batch per target."""

    def __init__(
        self, bus: Publisher, targets: list[ScrapeTarget], interval_s: float,
        timeout_s: float = 5.0, name: str = "prometheus_scrape",
    ) -> None:
        super().__init__(name, interval_s)
        self._resolver = EntityResolver()  # no graph on a node: ids built as the inventory does
        self.bus = bus
        self.targets = targets
        self.timeout_s = timeout_s
        self._failing: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=min(8, max(1, len(targets))),
                                        thread_name_prefix=name)

    def collect(self, now: float) -> None:
        for target, result in zip(self.targets, self._pool.map(self._fetch, self.targets),
                                  strict=True):
            if result is None:
                continue
            try:
                samples = parse_exposition(result, now)
            except ValueError as exc:
                log.warning("unparseable exposition", extra={"url": target.url, "error": exc})
                self.counters.add_errored()
                continue
            batch = MetricBatch(
                resource={"host.name": target.node, "vigil.entity": f"node:{target.node}",
                          "service.name": target.service, "url.full": target.url},
                samples=tag_samples(samples, target.node, self._resolver),
            )
            self.bus.publish(Topic.METRICS, encode_metrics([batch]), key=target.node)
            self.counters.add_received(len(samples))
            self.counters.add_sent(len(samples))

    def _fetch(self, target: ScrapeTarget) -> str | None:
        try:
            with urllib.request.urlopen(target.url, timeout=self.timeout_s) as response:
                text = str(response.read().decode("utf-8", errors="replace"))
        except (urllib.error.URLError, OSError) as exc:
            if target.url not in self._failing:  # say it once, not every interval
                log.warning("scrape failed", extra={"url": target.url, "error": exc})
                self._failing.add(target.url)
            self.counters.add_errored()
            return None
        if target.url in self._failing:
            self._failing.discard(target.url)
            log.info("scrape recovered", extra={"url": target.url})
        return text

    def shutdown(self) -> None:
        super().shutdown()
        self._pool.shutdown(wait=False, cancel_futures=True)
