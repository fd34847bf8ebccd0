"""Vigil's own metrics through the OpenTelemetry SDK, served for Prometheus to scrape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Counter, Meter, get_meter_provider, set_meter_provider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

_server: Any = None


def start(host: str, port: int) -> int:
    """Install the SDK meter provider and serve `/metrics` on host:port; return the port.

    Idempotent: a second call returns the port already served.
    """
    global _server
    if _server is not None:
        return int(_server[0].server_port)
    reader = PrometheusMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "vigil"}), metric_readers=[reader]
    )
    set_meter_provider(provider)
    _server = start_http_server(port, addr=host)
    return int(_server[0].server_port)


def shutdown() -> None:
    global _server
    if _server is not None:
        server, thread = _server
        server.shutdown()
        thread.join(timeout=5)
        _server = None


def meter(name: str) -> Meter:
    return get_meter_provider().get_meter(name)


@dataclass(frozen=True, slots=True)
class ComponentCounters:
    """The four counters every component reports (received, sent, dropped, errored)."""

    received: Counter
    sent: Counter
    dropped: Counter
    errored: Counter
    attributes: dict[str, str]

    def add_received(self, n: int = 1) -> None:
        self.received.add(n, self.attributes)

    def add_sent(self, n: int = 1) -> None:
        self.sent.add(n, self.attributes)

    def add_dropped(self, n: int = 1) -> None:
        self.dropped.add(n, self.attributes)

    def add_errored(self, n: int = 1) -> None:
        self.errored.add(n, self.attributes)


def component_counters(component: str) -> ComponentCounters:
    m = meter("vigil")
    return ComponentCounters(
        received=m.create_counter("vigil_component_received", unit="1",
                                  description="items a component took in"),
        sent=m.create_counter("vigil_component_sent", unit="1",
                              description="items a component passed on"),
        dropped=m.create_counter("vigil_component_dropped", unit="1",
                                 description="items a component discarded on purpose"),
        errored=m.create_counter("vigil_component_errored", unit="1",
                                 description="items a component could not handle"),
        attributes={"component": component},
    )
