"""PeerDetector: the machine of a job that stands apart from its peers, raised once per episode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from vigil.collectors.identity import tag_samples
from vigil.collectors.prometheus_scrape import parse_exposition
from vigil.diagnosis.library import FaultLibrary, FaultMode
from vigil.diagnosis.peer import ANOMALY_ID, PeerDetector
from vigil.sim.cluster import SimCluster
from vigil.sim.topology import ClusterSpec
from vigil.topology.identity import EntityResolver

from vigil.frames import MetricFrame, SeriesTable
from vigil.otlp import LogBatch, MetricBatch, MetricKind, MetricSample
from vigil.records import Alert

T0 = 1_718_000_000.0
COMPUTE = "training_compute_time_seconds"
CLOCK, TEMP = "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_TEMP"
RECEIVED = "node_infiniband_port_data_received_bytes_total"
HOSTS = [f"n{i}" for i in range(1, 9)]

# One scrape: (host, metric, labels, value, kind) per sample.
Sample = tuple[str, str, dict[str, str], float, MetricKind]
Scrape = Callable[[float], list[Sample]]


def run(detector: PeerDetector, scrape: Scrape, start: float, end: float, step: float,
        table: SeriesTable | None = None) -> list[Alert]:
    """Feed one frame per host and scrape, as the detect stage does; every alert raised."""
    table = SeriesTable() if table is None else table
    alerts: list[Alert] = []
    t = start
    while t < end:
        by_host: dict[str, list[MetricSample]] = {}
        for host, name, labels, value, kind in scrape(t):
            by_host.setdefault(host, []).append(MetricSample(name, value, labels, t, kind))
        for host, samples in by_host.items():
            frame = MetricFrame.from_batches([MetricBatch({"host.name": host}, samples)], table)
            alerts += detector.observe_metrics(frame, now=t + 1)
        t += step
    return alerts


def trainers(rng: np.random.Generator, hosts: list[str], slow: dict[str, float],
             noise: float = 0.01, job: str = "j1") -> list[Sample]:
    return [(h, COMPUTE, {"job": job, "node": h},
             4.2 * slow.get(h, 1.0) * rng.normal(1, noise), "gauge") for h in hosts]


def gpus(rng: np.random.Generator, hosts: list[str], ambient: np.ndarray,
         hot: dict[tuple[str, int], float], extra: dict[str, str] | None = None) -> list[Sample]:
    """SM clock and temperature of 8 GPUs a host; `hot` GPUs run that much hotter, throttled."""
    out: list[Sample] = []
    for i, h in enumerate(hosts):
        for g in range(8):
            labels = {"gpu": str(g), "UUID": f"GPU-{h}-{g}", "Hostname": h, **(extra or {})}
            offset = hot.get((h, g), 0.0)
            out.append((h, CLOCK, labels, 1410.0 if offset else 1980.0, "gauge"))
            temp = 70 + ambient[i, g] + offset + rng.normal(0, 1.5)
            out.append((h, TEMP, labels, round(temp), "gauge"))
    return out


@pytest.fixture
def detector(library: FaultLibrary) -> PeerDetector:
    return PeerDetector(library)


def test_a_straggler_among_eight_is_named_within_five_minutes(detector: PeerDetector) -> None:
    rng = np.random.default_rng(1)
    onset = T0 + 1207.0

    def scrape(t: float) -> list[Sample]:
        return trainers(rng, HOSTS, {"n5": 1.07} if t >= onset else {})

    alerts = run(detector, scrape, T0, onset + 600, 10.0)

    assert [(a.fault_id, a.entity, a.node) for a in alerts] == [
        ("job.straggler", "node:n5", "n5")]
    alert = alerts[0]
    assert alert.detected_at - onset <= 300
    assert onset <= alert.observed_at <= onset + 10  # the first slow sample
    assert alert.evidence["metric"] == COMPUTE
    assert alert.evidence["job"] == "j1"
    assert alert.evidence["peers"] == "8"
    ratio = float(alert.evidence["ratio"])
    assert ratio == pytest.approx(1.07, abs=0.02)  # the straggler is 7 % slower
    assert ratio == pytest.approx(
        float(alert.evidence["value"]) / float(alert.evidence["peer_median"]), rel=0.01)
    assert float(alert.evidence["value"]) > float(alert.evidence["peer_median"])
    assert int(alert.evidence["windows"]) >= 2


def test_healthy_noisy_peers_raise_nothing_for_hours(detector: PeerDetector) -> None:
    rng = np.random.default_rng(2)
    ambient = rng.normal(0, 1.5, (len(HOSTS), 8))  # each GPU in its own airflow, for good
    pause = (T0 + 3600, T0 + 3640)  # one node stalls 40 s (a GC pause, a slow batch): no fault

    def scrape(t: float) -> list[Sample]:
        slow = {"n2": 1.2} if pause[0] <= t < pause[1] else {}
        spikes = {("n4", 1): 15.0} if rng.random() < 0.01 else {}  # fans lagging a burst
        return trainers(rng, HOSTS, slow, noise=0.015) + gpus(rng, HOSTS, ambient, spikes)

    assert run(detector, scrape, T0, T0 + 3 * 3600, 20.0) == []


def test_two_members_raise_nothing_where_three_would(library: FaultLibrary) -> None:
    rng = np.random.default_rng(3)

    def scrape_of(hosts: list[str]) -> Scrape:
        return lambda t: trainers(rng, hosts, {"n1": 1.3})

    # With two, either could be the odd one; a third says which.
    assert run(PeerDetector(library), scrape_of(["n1", "n2"]), T0, T0 + 1800, 10.0) == []
    alerts = run(PeerDetector(library), scrape_of(["n1", "n2", "n3"]), T0, T0 + 1800, 10.0)
    assert [a.entity for a in alerts] == ["node:n1"]


def test_one_alert_per_episode_re_armed_after_recovery(detector: PeerDetector) -> None:
    rng = np.random.default_rng(4)
    first, dip, healed, again = T0 + 600, T0 + 1200, T0 + 1800, T0 + 2400

    def scrape(t: float) -> list[Sample]:
        # slow from `first`, in line for one window at `dip` (not yet recovered), healed at
        # `healed` for ten minutes, slow again from `again`
        slow = (first <= t < dip) or (dip + 30 <= t < healed) or t >= again
        return trainers(rng, HOSTS, {"n3": 1.08} if slow else {})

    alerts = run(detector, scrape, T0, T0 + 3000, 10.0)

    assert [a.entity for a in alerts] == ["node:n3", "node:n3"]
    assert [round(a.observed_at - T0) for a in alerts] == [600, 2400]


def test_a_fail_slow_gpu_is_found_and_named(detector: PeerDetector) -> None:
    rng = np.random.default_rng(5)
    ambient = rng.normal(0, 1.5, (len(HOSTS), 8))
    onset = T0 + 905.0

    def scrape(t: float) -> list[Sample]:
        hot = {("n3", 5): 30.0} if t >= onset else {}
        return trainers(rng, HOSTS, {}) + gpus(rng, HOSTS, ambient, hot)

    alerts = run(detector, scrape, T0, onset + 600, 10.0)

    assert {(a.fault_id, a.entity, a.node) for a in alerts} == {(ANOMALY_ID, "gpu:n3/5", "n3")}
    assert sorted(a.evidence["metric"] for a in alerts) == sorted([CLOCK, TEMP])
    assert all(a.detected_at - onset <= 300 and a.observed_at >= onset for a in alerts)
    assert {a.evidence["job"] for a in alerts} == {"j1"}


def test_hardware_is_compared_only_within_a_running_job(detector: PeerDetector) -> None:
    rng = np.random.default_rng(6)
    ambient = np.zeros((len(HOSTS), 8))
    hot = {("n2", 0): 30.0}
    # Behind Prometheus every series has a `job` label: the scrape job, not a training job.
    scrape_label = {"job": "dcgm-exporter"}

    def no_trainer(t: float) -> list[Sample]:
        return gpus(rng, HOSTS, ambient, hot, scrape_label)

    def with_trainer(t: float) -> list[Sample]:
        return trainers(rng, HOSTS, {}) + no_trainer(t)

    assert run(detector, no_trainer, T0, T0 + 1800, 10.0) == []
    alerts = run(detector, with_trainer, T0 + 1800, T0 + 3600, 10.0)
    assert {a.entity for a in alerts} == {"gpu:n2/0"}


def test_a_nic_carrying_less_traffic_is_found(detector: PeerDetector) -> None:
    rng = np.random.default_rng(7)
    hosts = HOSTS[:4]
    onset = T0 + 600.0
    total = np.zeros((len(hosts), 8))

    def scrape(t: float) -> list[Sample]:
        rate = rng.normal(2.4e10, 1e9, total.shape)
        if t >= onset:
            rate[1, 3] *= 0.1  # a degraded link: one port of n2
        total[:] += rate * 10
        return trainers(rng, hosts, {}) + [
            (h, RECEIVED, {"device": f"mlx5_{k}", "port": "1"}, float(total[i, k]), "counter")
            for i, h in enumerate(hosts) for k in range(8)]

    alerts = run(detector, scrape, T0, onset + 600, 10.0)

    assert [(a.fault_id, a.entity) for a in alerts] == [(ANOMALY_ID, "nic:n2/mlx5_3")]
    assert alerts[0].detected_at - onset <= 300


def test_the_library_threshold_and_duration_decide(library: FaultLibrary) -> None:
    slow_disk = FaultMode.model_validate({
        "id": "host.slow_read", "layer": "host", "component": "disk", "title": "Slow reads",
        "severity": "critical", "description": "d", "playbook": "notify",
        "signals": {"metrics": [{"metric": "training_read_mbps", "condition": "peer_outlier",
                                 "threshold": 0.8, "for_s": 60}]}})
    detector = PeerDetector(FaultLibrary([slow_disk]), window_s=20.0)
    rng = np.random.default_rng(8)
    factor = {"n1": 0.7, "n2": 0.85}  # n1 past the 0.8 ratio, n2 not

    def scrape(t: float) -> list[Sample]:
        return [(h, "training_read_mbps", {"job": "j9"},
                 500 * factor.get(h, 1.0) * rng.normal(1, 0.01), "gauge") for h in HOSTS]

    alerts = run(detector, scrape, T0, T0 + 200, 5.0)

    assert [(a.fault_id, a.entity, a.severity.value) for a in alerts] == [
        ("host.slow_read", "node:n1", "critical")]
    assert alerts[0].evidence["condition"] == "peer_outlier 0.8 for 60 s"
    assert alerts[0].evidence["windows"] == "3"  # ceil(60 / 20)


def test_a_new_series_table_starts_afresh(detector: PeerDetector) -> None:
    rng = np.random.default_rng(9)

    def scrape(t: float) -> list[Sample]:
        return trainers(rng, HOSTS, {"n7": 1.1})

    # Three deviant windows on one table, then the stream moves to another: its ids may mean
    # other series, so what was learnt is dropped and persistence counts again from zero.
    first = run(detector, scrape, T0, T0 + 100, 10.0)
    second = run(detector, scrape, T0 + 100, T0 + 200, 10.0)
    later = run(detector, scrape, T0 + 200, T0 + 400, 10.0, detector._table)
    assert first == second == []
    assert [a.entity for a in later] == ["node:n7"]


def test_samples_after_their_window_was_judged_are_dropped(detector: PeerDetector) -> None:
    rng = np.random.default_rng(10)
    table = SeriesTable()
    run(detector, lambda t: trainers(rng, HOSTS, {}), T0, T0 + 300, 10.0, table)
    late = MetricFrame.from_batches([MetricBatch({"host.name": "n1"}, [
        MetricSample(COMPUTE, 99.0, {"job": "j1", "node": "n1"}, T0 + 5)])], table)
    assert detector.observe_metrics(late, T0 + 400) == []
    assert detector.late_samples == 1
    assert detector.observe_logs(LogBatch({}, []), T0) == []


# --- the simulator's own telemetry -------------------------------------------------------------

class SimScrape:
    """The simulator's exporters as the scrape collector reads them. Parsing every scrape
    with prometheus_client would take most of a minute, so each endpoint's series are named
    once (parse_exposition and tag_samples, as the collector does) and later scrapes' values
    read off the same lines."""

    def __init__(self, cluster: SimCluster, table: SeriesTable) -> None:
        self.cluster, self.table = cluster, table
        self._series: dict[tuple[str, str, int], list[int]] = {}
        self._resolver = EntityResolver()

    def frames(self, now: float) -> Iterator[MetricFrame]:
        tel = self.cluster.tel
        for node in self.cluster.topo.nodes:
            for endpoint, render in (("trainer", tel.trainer), ("dcgm", tel.dcgm),
                                     ("node", tel.node_exporter)):
                text = render(node)
                if text is None:
                    continue
                lines = [x for x in text.splitlines() if x and not x.startswith("#")]
                key = (node, endpoint, len(lines))
                if key not in self._series:
                    samples = tag_samples(parse_exposition(text, now), node, self._resolver)
                    assert len(samples) == len(lines)
                    resource = {"host.name": node, "vigil.entity": f"node:{node}"}
                    self._series[key] = [self.table.intern(resource, s.name, s.kind, s.labels)
                                         for s in samples]
                ids = self._series[key]
                yield MetricFrame.of(self.table, ids, [now] * len(ids),
                                     [float(x.rpartition(" ")[2]) for x in lines])


def test_the_simulator_healthy_then_a_straggler(library: FaultLibrary, tmp_path: Path) -> None:
    start = T0
    cluster = SimCluster(library, tmp_path / "sim", now=start,
                         spec=ClusterSpec(racks=1, nodes_per_rack=8, jobs=1, seed=11))
    scrape, detector = SimScrape(cluster, SeriesTable()), PeerDetector(library)
    onset = start + 3600 + 7
    alerts: list[Alert] = []
    truth = None
    t = start
    while t < onset + 360:
        t += 15.0
        if truth is None and t >= onset:
            truth = cluster.inject("job.straggler", "job:llm-8b-01", t, duration_s=3600).truth
        cluster.step(t)
        for frame in scrape.frames(t):
            alerts += detector.observe_metrics(frame, now=t + 0.5)

    assert truth is not None
    assert [a for a in alerts if a.observed_at < truth.onset] == []  # a healthy hour: quiet
    assert [(a.fault_id, a.node) for a in alerts] == [("job.straggler", truth.nodes[0])]
    assert alerts[0].detected_at - truth.onset <= 300
    assert truth.onset - 5 <= alerts[0].observed_at  # counts as this fault's in scoring
