"""LearnedDetector: fitted on healthy windows, quiet on noise, one alert per episode, persisted."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from vigil.diagnosis.learned import FAULT_ID, LearnedDetector, _Forest
from vigil.diagnosis.learned_features import FEATURE_SETS, FeatureWindows
from vigil.diagnosis.library import FaultLibrary

from vigil.frames import Int64s, MetricFrame, SeriesTable
from vigil.otlp import MetricBatch, MetricKind, MetricSample
from vigil.records import Alert, Severity

T0 = 1.8e9  # a multiple of 30 s: windows start on whole half-minutes
STEP = 10.0  # seconds between scrapes
TEMP, POWER = "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"
FIELDS: list[tuple[str, MetricKind]] = [
    (TEMP, "gauge"), ("DCGM_FI_DEV_MEMORY_TEMP", "gauge"), (POWER, "gauge"),
    ("DCGM_FI_DEV_SM_CLOCK", "gauge"), ("DCGM_FI_DEV_GPU_UTIL", "gauge"),
    ("DCGM_FI_DEV_FB_USED", "gauge"), ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter")]


class Node:
    """One host's dcgm-exporter: busy GPUs (8 by default), each with its own airflow, noise
    and rare hot spikes, sampled every STEP seconds. Faults act through `temp_offset` and
    `power_factor`."""

    def __init__(self, seed: int = 1, gpus: int = 8, host: str = "n1") -> None:
        self.rng = np.random.default_rng(seed)
        self.host = host
        self.table = SeriesTable()
        self.t = T0
        self.ambient = self.rng.normal(0, 1.5, gpus)
        self.temp_offset = np.zeros(gpus)
        self.power_factor = np.ones(gpus)
        self.nvlink = np.zeros(gpus)
        self.ids: Int64s | None = None

    def frame(self) -> MetricFrame:
        self.t += STEP
        n, rng = len(self.ambient), self.rng
        spikes = np.where(rng.random(n) < 0.002, rng.uniform(10, 18, n), 0.0)
        temp = np.round(70 + self.ambient + spikes + self.temp_offset + rng.normal(0, 1.2, n))
        self.nvlink += rng.normal(2.2e5, 1e4, n) * STEP
        columns = np.stack([  # per GPU, in FIELDS order
            temp, temp + 7, (610 + rng.normal(0, 18, n)) * self.power_factor,
            np.full(n, 1980.0), np.round(np.clip(rng.normal(93, 3, n), 0, 100)),
            np.round(71000 + rng.normal(0, 400, n)), self.nvlink], axis=1).ravel()
        if self.ids is None:  # the first scrape names the series; later ones reuse the ids
            frame = MetricFrame.from_batches([MetricBatch({"host.name": self.host}, [
                MetricSample(name, float(value), self.labels(g), self.t, kind)
                for (g, (name, kind)), value in zip(
                    ((g, f) for g in range(n) for f in FIELDS), columns, strict=True)])],
                self.table)
            self.ids = frame.series
            return frame
        return MetricFrame(self.table, self.ids, np.full(len(self.ids), self.t), columns)

    def labels(self, gpu: int) -> dict[str, str]:
        return {"gpu": str(gpu), "UUID": f"GPU-{self.host}-{gpu}", "Hostname": self.host}

    def run(self, detector: LearnedDetector, seconds: float) -> list[Alert]:
        alerts: list[Alert] = []
        for _ in range(round(seconds / STEP)):
            frame = self.frame()
            alerts += detector.observe_metrics(frame, now=self.t + 1)
        return alerts


def detector(model_dir: Path, **options: float) -> LearnedDetector:
    # Warm up in 5 minutes rather than 10 and fit smaller forests: the same logic, faster.
    settings: dict[str, float] = {"min_history_s": 300, "min_fit_rows": 64, "n_estimators": 25}
    settings.update(options)
    return LearnedDetector(FaultLibrary([]), model_dir=model_dir,
                           min_history_s=settings["min_history_s"],
                           min_fit_rows=int(settings["min_fit_rows"]),
                           n_estimators=int(settings["n_estimators"]),
                           refit_every_s=settings.get("refit_every_s", 3600.0),
                           accept_after_s=settings.get("accept_after_s", 7200.0))


def test_nothing_is_scored_before_enough_history(tmp_path: Path) -> None:
    node, learned = Node(), detector(tmp_path)
    node.temp_offset[3] = 40.0  # wildly hot from the start: there is nothing to compare with
    assert node.run(learned, 240) == []
    assert learned.fitted_at("gpu") is None
    assert not list(tmp_path.iterdir())
    node.run(learned, 120)
    assert learned.fitted_at("gpu") == T0 + 300  # the end of the window it fitted on


def test_a_gpu_far_from_healthy_is_alerted_once_per_episode(tmp_path: Path) -> None:
    node, learned = Node(), detector(tmp_path)
    assert node.run(learned, 1800) == []
    onset = node.t
    node.temp_offset[3], node.power_factor[3] = 25.0, 0.6
    alerts = node.run(learned, 600)
    assert [(a.fault_id, a.entity, a.node, a.severity) for a in alerts] == [
        (FAULT_ID, "gpu:n1/3", "n1", Severity.INFO)]
    alert = alerts[0]
    # observed at the start of the first anomalous window: the one the fault began in
    assert onset - 30 < alert.observed_at <= onset and alert.observed_at % 30 == 0
    assert alert.detected_at - onset <= 3 * 30
    top = alert.evidence["features"].split(", ")
    assert set(top[:2]) <= {TEMP, "DCGM_FI_DEV_MEMORY_TEMP", POWER} and POWER in top
    assert "healthy median" in alert.evidence[TEMP]
    assert float(alert.evidence["score"]) >= float(alert.evidence["threshold"])
    # healed for longer than an episode's tail, then the same fault again: a new alert
    node.temp_offset[3], node.power_factor[3] = 0.0, 1.0
    assert node.run(learned, 600) == []
    node.temp_offset[3], node.power_factor[3] = 25.0, 0.6
    assert [a.entity for a in node.run(learned, 300)] == ["gpu:n1/3"]


def test_one_anomalous_window_is_not_an_alert(tmp_path: Path) -> None:
    node, learned = Node(), detector(tmp_path)
    node.run(learned, 1800)
    node.temp_offset[5] = 30.0
    alerts = node.run(learned, 20)  # the window [1800 s, 1830 s): persistence asks for two
    node.temp_offset[5] = 0.0
    assert alerts + node.run(learned, 300) == []


def test_healthy_noisy_telemetry_raises_nothing_for_hours(tmp_path: Path) -> None:
    node, learned = Node(seed=7, gpus=16), detector(tmp_path)
    assert node.run(learned, 6 * 3600) == []
    assert learned.fits >= 6  # it kept refitting hourly the whole time


def test_models_are_persisted_and_a_restarted_detector_scores_at_once(tmp_path: Path) -> None:
    node = Node()
    node.run(detector(tmp_path), 900)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.pkl"]  # no temporary left
    restarted = detector(tmp_path)
    assert restarted.fitted_at("gpu") is not None
    node.temp_offset[2] = 25.0
    node.power_factor[2] = 0.6
    assert [a.entity for a in node.run(restarted, 120)] == ["gpu:n1/2"]


def test_a_model_that_cannot_be_saved_is_still_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "taken").write_text("a file where the folder should be")
    node, learned = Node(), detector(tmp_path / "taken" / "models")
    with caplog.at_level(logging.WARNING, logger="vigil.diagnosis.learned"):
        node.run(learned, 900)
    assert [r.getMessage() for r in caplog.records] == ["learned model not saved"]
    node.temp_offset[0], node.power_factor[0] = 25.0, 0.6
    assert [a.entity for a in node.run(learned, 120)] == ["gpu:n1/0"]


def test_refits_on_schedule_without_learning_the_fault(tmp_path: Path) -> None:
    node, learned = Node(), detector(tmp_path, refit_every_s=600)
    node.run(learned, 900)
    first = learned.fitted_at("gpu")
    assert first is not None
    node.temp_offset[4] = 25.0
    node.power_factor[4] = 0.6
    assert [a.entity for a in node.run(learned, 1500)] == ["gpu:n1/4"]
    refits = learned.fits
    fitted = learned.fitted_at("gpu")
    assert refits >= 3 and fitted is not None and fitted >= first + 1200
    # The refits left the fault's windows out: healed, then hot again, it is still news.
    node.temp_offset[4], node.power_factor[4] = 0.0, 1.0
    node.run(learned, 600)
    node.temp_offset[4], node.power_factor[4] = 25.0, 0.6
    assert [a.entity for a in node.run(learned, 300)] == ["gpu:n1/4"]


def test_an_anomaly_that_lasts_is_learnt_as_the_new_normal(tmp_path: Path) -> None:
    node = Node()
    learned = detector(tmp_path, refit_every_s=600, accept_after_s=900)
    node.run(learned, 900)
    node.temp_offset[6], node.power_factor[6] = 25.0, 0.6
    assert [a.entity for a in node.run(learned, 3600)] == ["gpu:n1/6"]
    node.temp_offset[6], node.power_factor[6] = 0.0, 1.0
    node.run(learned, 600)
    node.temp_offset[6], node.power_factor[6] = 25.0, 0.6
    assert node.run(learned, 300) == []  # seen for long enough, it is a state, not news


@pytest.mark.parametrize("content", [
    b"not a pickle",
    pickle.dumps({"format": 1, "features": ["something else"], "sklearn": "0",
                  "forest": None}),
    pickle.dumps(["a list"]),
])
def test_a_bad_model_file_is_ignored_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes) -> None:
    (tmp_path / "gpu.pkl").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="vigil.diagnosis.learned"):
        learned = detector(tmp_path)
    assert learned.fitted_at("gpu") is None
    assert [r.getMessage() for r in caplog.records] == ["learned model ignored"]
    node = Node()
    node.temp_offset[1] = 30.0
    assert node.run(learned, 240) == []  # no model: it learns from scratch, and says nothing


def test_a_model_that_finds_the_whole_fleet_anomalous_is_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Node(seed=3).run(detector(tmp_path), 900)
    elsewhere = Node(seed=4)
    elsewhere.temp_offset[:] = 25.0  # another cluster, another climate
    with caplog.at_level(logging.WARNING, logger="vigil.diagnosis.learned"):
        learned = detector(tmp_path)
        assert elsewhere.run(learned, 600) == []
    assert "disagrees with most of its fleet" in caplog.text


def test_forest_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(500, 4))
    forest = IsolationForest(n_estimators=30, max_samples=128, max_features=0.75,
                             random_state=0).fit(rows)
    probe = np.vstack([rng.normal(size=(50, 4)), rng.normal(size=(5, 4)) * 10])
    assert np.allclose(_Forest(forest).raw(probe), -forest.score_samples(probe))


def test_counters_become_rates_and_gauges_means() -> None:
    table = SeriesTable()
    windows = FeatureWindows(FEATURE_SETS, window_s=30.0)
    closed = []
    for k in range(7):  # 0, 10, ..., 60 s: window [0, 30) closes when t=60 arrives
        t = T0 + 10 * k
        labels = {"device": "mlx5_0", "port": "1"}
        batch = MetricBatch({"host.name": "n1"}, [
            MetricSample("node_infiniband_port_data_received_bytes_total", 5e14 + 2e9 * t,
                         labels, t, "counter"),
            MetricSample("node_infiniband_port_data_transmitted_bytes_total", 1e3 * k, labels,
                         t, "counter"),
            MetricSample("node_load1", float(k), {}, t),
            MetricSample("node_memory_MemAvailable_bytes", 1e12, {}, t)])
        closed += windows.add(MetricFrame.from_batches([batch], table))
    by_set = {w.feature_set.name: w for w in closed}
    assert sorted(by_set) == ["host", "nic"]
    assert by_set["nic"].entities == ["nic:n1/mlx5_0"] and by_set["nic"].start == T0
    assert np.allclose(by_set["nic"].matrix, [[2e9, 100.0]])
    assert by_set["host"].entities == ["node:n1"]
    assert np.allclose(by_set["host"].matrix, [[1.0, 1e12]])  # mean of loads 0, 1, 2


def test_a_new_series_table_starts_over_and_late_samples_are_dropped() -> None:
    windows = FeatureWindows(FEATURE_SETS, window_s=30.0)

    def load(t: float, table: SeriesTable) -> MetricFrame:
        return MetricFrame.from_batches([MetricBatch({"host.name": "n1"}, [
            MetricSample("node_load1", 1.0, {}, t),
            MetricSample("node_memory_MemAvailable_bytes", 1e12, {}, t)])], table)

    first = SeriesTable()
    for t in (0, 10, 20):
        assert windows.add(load(T0 + t, first)) == []
    assert [w.start for w in windows.add(load(T0 + 40, first))] == [T0]  # 30 s + 5 s late
    assert [w.start for w in windows.add(load(T0 + 70, first))] == [T0 + 30]
    windows.add(load(T0 + 5, first))  # its window has closed: both samples are dropped
    assert [w.start for w in windows.add(load(T0 + 100, first))] == [T0 + 60]
    assert windows.late == 2
    # Another table: the open windows of the old one are closed, ids are read afresh.
    closed = windows.add(load(T0 + 110, SeriesTable()))
    assert [(w.start, w.entities) for w in closed] == [(T0 + 90, ["node:n1"])]


def test_a_frame_spanning_windows_is_split_by_sample_time() -> None:
    windows, table = FeatureWindows(FEATURE_SETS, window_s=30.0), SeriesTable()

    def batch(t: float, load: float) -> MetricBatch:
        return MetricBatch({"host.name": "n1"}, [
            MetricSample("node_load1", load, {}, t),
            MetricSample("node_memory_MemAvailable_bytes", 1e12, {}, t)])

    # several scrapes decoded together, the latest not last
    assert windows.add(MetricFrame.from_batches(
        [batch(T0 + 10, 1.0), batch(T0 + 40, 5.0), batch(T0 + 20, 3.0)], table)) == []
    closed = windows.add(MetricFrame.from_batches([batch(T0 + 70, 9.0)], table))
    assert [(w.start, w.matrix[0, 0]) for w in closed] == [(T0, 2.0), (T0 + 30, 5.0)]
