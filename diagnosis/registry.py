"""Detectors by name: `detect.detectors` in the settings picks from this table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vigil.diagnosis.base import Detector
from vigil.diagnosis.learned import LearnedDetector
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_novelty import LogNoveltyDetector
from vigil.diagnosis.log_rules import LogRuleDetector
from vigil.diagnosis.metric_rules import MetricRuleDetector
from vigil.diagnosis.peer import PeerDetector


@dataclass(frozen=True, slots=True)
class DetectorSetup:
    """What a detector is built from."""

    library: FaultLibrary
    data_dir: Path  # where a detector keeps what it learns (the learned models)


DETECTORS: dict[str, Callable[[DetectorSetup], Detector]] = {
    "log_rules": lambda setup: LogRuleDetector(setup.library),
    "metric_rules": lambda setup: MetricRuleDetector(setup.library),
    "peer": lambda setup: PeerDetector(setup.library),
    "log_novelty": lambda setup: LogNoveltyDetector(setup.library),
    "learned": lambda setup: LearnedDetector(setup.library,
                                             model_dir=setup.data_dir / "models"),
}


def build_detectors(names: list[str], library: FaultLibrary,
                    data_dir: Path = Path(".vigil")) -> list[Detector]:
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(
            f"detect.detectors: unknown detector(s) {unknown}; known: {sorted(DETECTORS)}"
        )
    setup = DetectorSetup(library, data_dir)
    return [DETECTORS[n](setup) for n in names]
