"""Detectors by name: `detect.detectors` in the settings picks from this table."""

from __future__ import annotations

from collections.abc import Callable

from vigil.diagnosis.base import Detector
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_rules import LogRuleDetector
from vigil.diagnosis.metric_rules import MetricRuleDetector

DETECTORS: dict[str, Callable[[FaultLibrary], Detector]] = {
    "log_rules": LogRuleDetector,
    "metric_rules": MetricRuleDetector,
}


def build_detectors(names: list[str], library: FaultLibrary) -> list[Detector]:
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(
            f"detect.detectors: unknown detector(s) {unknown}; known: {sorted(DETECTORS)}"
        )
    return [DETECTORS[n](library) for n in names]
