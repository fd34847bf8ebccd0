"""MetricRuleDetector: conditions held for their duration raise a mode once per episode."""

from __future__ import annotations

import math

import pytest
from vigil.diagnosis.library import FaultLibrary, FaultMode
from vigil.diagnosis.metric_rules import MetricRuleDetector

from vigil.frames import MetricFrame
from vigil.otlp import MetricBatch, MetricSample
from vigil.records import Alert

GPU = {"gpu": "3", "UUID": "GPU-1", "Hostname": "n1"}


def mode(mode_id: str, **signal: object) -> FaultMode:
    return FaultMode.model_validate({
        "id": mode_id, "layer": "compute", "component": "gpu", "title": mode_id,
        "severity": "warning", "description": "d", "playbook": "notify", "references": ["r"],
        "signals": {"metrics": [signal]}})


@pytest.fixture
def detector() -> MetricRuleDetector:
    return MetricRuleDetector(FaultLibrary([
        mode("t.hot", metric="temp", condition="above", threshold=87, for_s=60),
        mode("t.slow", metric="clock", condition="below", threshold=1500, for_s=0),
        mode("t.errors", metric="errors_total", condition="increase", threshold=0, for_s=60),
        mode("t.nan", metric="loss", condition="absent", for_s=30),
        mode("t.peer", metric="temp", condition="peer_outlier", threshold=1.1, for_s=60),
    ]))


def feed(detector: MetricRuleDetector, name: str, points: list[tuple[float, float]],
         labels: dict[str, str] | None = None) -> list[Alert]:
    alerts: list[Alert] = []
    for t, value in points:
        batch = MetricBatch(resource={"host.name": "n1"}, samples=[
            MetricSample(name, value, labels if labels is not None else GPU, t)])
        alerts += detector.observe_metrics(MetricFrame.from_batches([batch]), now=t + 1)
    return alerts


def test_above_fires_once_after_its_duration_with_the_onset(
        detector: MetricRuleDetector) -> None:
    alerts = feed(detector, "temp", [(0, 80), (10, 90), (40, 91), (69, 92), (70, 93), (80, 95)])
    assert [(a.fault_id, a.entity, a.observed_at, a.detected_at) for a in alerts] == [
        ("t.hot", "gpu:n1/3", 10.0, 71.0)]
    assert alerts[0].evidence["condition"] == "above 87 for 60 s"
    # cooled down, hot again: a new episode, a new alert
    again = feed(detector, "temp", [(90, 70), (100, 90), (160, 90)])
    assert [a.observed_at for a in again] == [100.0]


def test_a_condition_that_breaks_starts_over(detector: MetricRuleDetector) -> None:
    assert feed(detector, "temp", [(0, 90), (50, 80), (60, 90), (100, 90)]) == []


def test_below_with_no_duration_fires_at_once(detector: MetricRuleDetector) -> None:
    assert [a.fault_id for a in feed(detector, "clock", [(0, 1980), (10, 1200)])] == ["t.slow"]


def test_increase_needs_a_rise_within_the_window_and_survives_resets(
        detector: MetricRuleDetector) -> None:
    steady = [(t, 5.0) for t in range(0, 300, 10)]
    assert feed(detector, "errors_total", steady) == []
    alerts = feed(detector, "errors_total", [(300, 7.0)])
    assert [(a.fault_id, a.observed_at) for a in alerts] == [("t.errors", 300.0)]
    assert feed(detector, "errors_total", [(310, 0.0), (320, 0.0)]) == []  # reset, then quiet


def test_absent_means_no_finite_value_for_the_duration(detector: MetricRuleDetector) -> None:
    alerts = feed(detector, "loss", [(0, 2.1), (10, math.nan), (30, math.inf), (40, math.nan)],
                  labels={"job": "j1"})
    assert [(a.fault_id, a.entity, a.observed_at) for a in alerts] == [("t.nan", "node:n1", 10.0)]


def test_series_are_kept_apart(detector: MetricRuleDetector) -> None:
    other = {**GPU, "gpu": "4", "UUID": "GPU-2"}
    feed(detector, "temp", [(0, 90)])
    feed(detector, "temp", [(30, 90)], labels=other)
    alerts = feed(detector, "temp", [(60, 90)]) + feed(detector, "temp", [(80, 90)], labels=other)
    assert [a.entity for a in alerts] == ["gpu:n1/3"]


def test_the_shipped_thermal_mode_fires_on_a_hot_gpu(library: FaultLibrary) -> None:
    detector = MetricRuleDetector(library)
    labels = {**GPU, "pci_bus_id": "00000000:18:00.0"}
    alerts = feed(detector, "DCGM_FI_DEV_GPU_TEMP", [(t, 91.0) for t in range(0, 70, 10)],
                  labels=labels)
    assert [(a.fault_id, a.entity, a.observed_at) for a in alerts] == [
        ("gpu.thermal_throttle", "gpu:n1/3", 0.0)]
    assert detector.name == "metric_rules"
