"""Every registered detector keeps the Detector contract (one test over all of them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.registry import DETECTORS, build_detectors

from vigil.frames import MetricFrame, SeriesTable
from vigil.otlp import LogBatch, LogLine, MetricBatch, MetricSample

T0 = 1_767_225_600.0


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_a_detector_takes_empty_and_ordinary_input_quietly(
        name: str, library: FaultLibrary, tmp_path: Path) -> None:
    (detector,) = build_detectors([name], library, tmp_path)
    assert detector.name == name
    empty = MetricFrame.from_batches([], SeriesTable())
    assert detector.observe_metrics(empty, T0) == []
    assert detector.observe_logs(LogBatch({"host.name": "n1"}, []), T0) == []
    # one healthy scrape and one ordinary line, in a table the detector has not seen
    frame = MetricFrame.from_batches([MetricBatch({"host.name": "n1"}, [
        MetricSample("DCGM_FI_DEV_GPU_TEMP", 55.0, {"gpu": "0"}, T0)])], SeriesTable())
    assert detector.observe_metrics(frame, T0 + 1) == []
    line = LogLine("2026-01-01T00:00:00Z n1 trainer: step 10 loss 2.31", T0)
    assert detector.observe_logs(LogBatch({"host.name": "n1"}, [line]), T0 + 1) == []


def test_an_unknown_detector_is_named_with_the_known_ones(library: FaultLibrary) -> None:
    with pytest.raises(ValueError, match=r"unknown detector\(s\) \['nope'\]; known: "):
        build_detectors(["nope"], library)
