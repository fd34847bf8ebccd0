"""Peer comparison: the machine of a training job whose recent metrics stand apart from its peers'.

The machines of one synchronous job do the same work, so the odd one (a straggler rank, a
fail-slow GPU, a NIC carrying less traffic) shows against the others, as in ByteDance's Minder
(NSDI'25): the peers are the baseline, so no threshold has to fit every model size.

Peers: series of one metric name in one job. A trainer series (``training_*``) is in the job
of its own ``job`` label and tells which job its host runs; a hardware series (GPU, NIC port,
host) is in its host's job while that host's trainer reports. Hardware series ignore their own
``job`` label: behind Prometheus it names the scrape job. A group needs 3 members: of 2,
either could be the odd one.

Windows of `window_s` by sample time are judged once a sample `lateness_s` past their end has
come; samples later still are dropped (`late_samples`). A member's statistic is its median in
the window (a counter's: its rate); the group's, the median of those, with a robust spread of
1.4826 x their median absolute deviation, at least 1 % of the median (a fixed clock has none).

A library `peer_outlier` signal decides by its `threshold`, the ratio to the peer median (no
threshold: a robust z of `z_bound` either way), for ceil(`for_s` / `window_s`) deviant windows,
at least `min_windows`. A `PEER_METRICS` metric no library signal names needs its `min_change`
from the median and a z of `z_bound` for `generic_windows` windows, and raises `ANOMALY_ID`
("anomaly." as it is no library mode, "peer_outlier" the library's word for the condition; the
metric is in the evidence). An episode ends after `clear_windows` windows in a row back in
line or `gap_windows` silent ones; one window in line only pauses its count (a 7 % straggler
whose median dips under 1.05 once is still one). One alert per episode, `observed_at` its
onset: where the member's samples crossed halfway to the peer median (a counter's: the window's
start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from vigil.diagnosis.library import FaultLibrary
from vigil.topology.identity import ENTITY_ATTR, EntityResolver

from vigil.frames import MetricFrame, SeriesTable
from vigil.otlp import LogBatch
from vigil.records import Alert, Severity

Direction = Literal["above", "below", "either"]
Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PeerMetric:
    """A metric compared across a job's machines even where no library mode names it."""

    metric: str  # exporter name as written
    direction: Direction  # which way a fault moves it
    min_change: float  # distance from the peer median that counts, as a share of it
    floor: float = 0.0  # least spread (metric's unit) a z is taken against: rounding, idle


# What fails slow on a GPU machine; the simulator's healthy noise stays well inside these.
PEER_METRICS: Final = (
    PeerMetric("DCGM_FI_DEV_SM_CLOCK", "below", 0.10),  # clocks-event throttling
    PeerMetric("DCGM_FI_DEV_GPU_UTIL", "below", 0.20, floor=2.0),  # a rank not computing
    PeerMetric("DCGM_FI_DEV_GPU_TEMP", "above", 0.15, floor=1.0),  # cooling trouble
    PeerMetric("DCGM_FI_DEV_POWER_USAGE", "below", 0.25, floor=10.0),  # power brake, capping
    PeerMetric("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "below", 0.30),
    PeerMetric("node_infiniband_port_data_received_bytes_total", "below", 0.30),
    PeerMetric("node_infiniband_port_data_transmitted_bytes_total", "below", 0.30),
    PeerMetric("node_load1", "above", 0.50, floor=1.0),  # CPU contention on the host
)
ANOMALY_ID: Final = "anomaly.peer_outlier"
JOB_LABEL: Final = "job"
TRAINER_PREFIX: Final = "training_"
MIN_PEERS: Final = 3
MAD_TO_SIGMA: Final = 1.4826
REL_SPREAD_FLOOR: Final = 0.01
_RULED, _TRAINER = 1, 2  # per-series flags


@dataclass(frozen=True, slots=True)
class _Rule:
    metric: str
    fault_id: str
    title: str
    severity: Severity
    direction: Direction
    change: float  # least |ratio - 1|
    z_bound: float
    floor: float
    windows: int
    condition: str


@dataclass(frozen=True, slots=True)
class _Finding:
    """One deviant member in one window."""

    stat: float
    median: float
    z: float
    peers: int
    job: str


@dataclass(slots=True)
class _Episode:
    onset: float
    last: int  # the last window the member was judged in
    deviant: int = 0  # deviant windows so far
    calm: int = 0  # consecutive windows back in line
    fired: bool = False


class PeerDetector:
    """Each job's machines compared with one another, window by window (module doc)."""

    name = "peer"

    def __init__(self, library: FaultLibrary, window_s: float = 30.0, lateness_s: float = 10.0,
                 z_bound: float = 6.0, min_windows: int = 2, generic_windows: int = 4,
                 clear_windows: int = 2, gap_windows: int = 2, stale_windows: int = 2,
                 metrics: tuple[PeerMetric, ...] = PEER_METRICS) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s, self.lateness_s = window_s, lateness_s
        self.clear_windows, self.gap_windows = clear_windows, gap_windows
        self.stale_windows = stale_windows
        self._rules: list[_Rule] = []
        for mode in library:
            for sig in mode.signals.metrics:
                if sig.condition == "peer_outlier":
                    bound = sig.threshold
                    text = "peer_outlier" + ("" if bound is None else f" {bound:g}")
                    self._rules.append(_Rule(
                        sig.metric, mode.id, mode.title, mode.severity,
                        "either" if bound is None else "above" if bound >= 1 else "below",
                        0.0 if bound is None else abs(bound - 1), z_bound if bound is None else 0.0,
                        0.0, max(min_windows, math.ceil(sig.for_s / window_s)),
                        f"{text} for {sig.for_s:g} s"))
        named = {rule.metric for rule in self._rules}  # the library's own signal decides
        self._rules += [_Rule(
            pm.metric, ANOMALY_ID, "Outlier among its peers", Severity.WARNING, pm.direction,
            pm.min_change, z_bound, pm.floor, generic_windows,
            f"{pm.direction} peers by {pm.min_change:.0%} and z {z_bound:g} "
            f"for {generic_windows * window_s:g} s") for pm in metrics if pm.metric not in named]
        self._by_metric: dict[str, list[int]] = {}
        for index, rule in enumerate(self._rules):
            self._by_metric.setdefault(rule.metric, []).append(index)
        self._metric_ids = {metric: i for i, metric in enumerate(self._by_metric)}
        self._rule_metric = np.array([self._metric_ids[r.metric] for r in self._rules])
        self.late_samples = 0  # samples that came after their window was judged
        self._resolver = EntityResolver()
        self._reset(SeriesTable())

    def _reset(self, table: SeriesTable) -> None:
        # Per series id: flags, is a counter, a counter's last point judged; its group (or -1)
        # and the last window it was judged in, both sized when series are grouped.
        self._table, self._flags, self._counter = table, np.zeros(0, np.uint8), np.zeros(0, bool)
        self._last_t, self._last_v = np.zeros(0), np.zeros(0)
        self._group_of, self._present = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self._groups: list[tuple[str, str]] = []  # (metric, job)
        self._group_metric = np.zeros(0, dtype=np.int64)  # group -> metric id
        self._group_ids: dict[tuple[str, str], int] = {}
        self._host_job: dict[str, tuple[str, int]] = {}  # host -> (job, last window seen)
        self._fresh: dict[str, str] = {}  # the host -> job map the groups were built from
        self._dirty = False
        self._episodes: list[dict[int, _Episode]] = [{} for _ in self._rules]
        self._buffer: list[tuple[Ints, Floats, Floats]] = []
        self._max_time = -math.inf
        self._next: int | None = None  # the first window not judged yet
        self._previous = (0, np.zeros(0, np.int64), np.zeros(0), np.zeros(0))  # last window

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]:
        return []

    def observe_metrics(self, frame: MetricFrame, now: float) -> list[Alert]:
        if frame.table is not self._table or len(frame.table.names) != len(self._flags):
            self._learn(frame.table)
        rows = self._flags[frame.series].nonzero()[0]  # the few numpy calls every frame pays
        if not rows.size:
            return []
        times = frame.times[rows]
        low, high = float(np.minimum.reduce(times)), float(np.maximum.reduce(times))
        until = -math.inf if self._next is None else self._next * self.window_s
        if not (low >= until and high < math.inf):  # late (its window judged), NaN or infinite
            keep = np.isfinite(times) & (times >= until)
            self.late_samples += len(times) - int(np.count_nonzero(keep))
            rows, times = rows[keep], times[keep]
            if not rows.size:
                return []
            low, high = float(times.min()), float(times.max())
        self._buffer.append((frame.series[rows], times, frame.values[rows]))
        self._max_time = max(self._max_time, high)
        if self._next is None:
            self._next = math.floor(low / self.window_s)
        due = math.floor((self._max_time - self.lateness_s) / self.window_s)
        return self._close(due, now) if due > self._next else []

    def _learn(self, table: SeriesTable) -> None:
        """Flag the series new to this detector: compared (ruled), or a trainer's."""
        if table is not self._table:
            self._reset(table)
        known, total = len(self._flags), len(table)
        if known == total:
            return
        grow, new = total - known, range(known, total)
        ruled = np.array([table.names[sid] in self._by_metric for sid in new], dtype=bool)
        trainer = np.array([table.names[sid].startswith(TRAINER_PREFIX)
                            and bool(table.labels[sid].get(JOB_LABEL)) for sid in new], dtype=bool)
        flags = (ruled * _RULED | trainer * _TRAINER).astype(np.uint8)
        counter = np.array([table.kinds[sid] == "counter" for sid in new], dtype=bool)
        self._flags = np.concatenate([self._flags, flags])
        self._counter = np.concatenate([self._counter, counter])
        self._last_t = np.concatenate([self._last_t, np.full(grow, np.nan)])
        self._last_v = np.concatenate([self._last_v, np.full(grow, np.nan)])
        self._dirty = self._dirty or bool(flags.any())

    def _learn_jobs(self, window: int, sids: Ints) -> None:
        """Which job each host runs, from its trainer series; regroup when that changed."""
        table = self._table
        trainer = sids[(self._flags[sids] & _TRAINER) != 0]
        for sid in np.unique(trainer).tolist():
            self._host_job[table.hosts[sid]] = (table.labels[sid][JOB_LABEL], window)
        fresh = {host: job for host, (job, seen) in self._host_job.items()
                 if window - seen <= self.stale_windows}
        if fresh == self._fresh and not self._dirty:
            return
        self._fresh, self._dirty = fresh, False
        group_of = np.full(len(table), -1, dtype=np.int64)
        for sid in np.flatnonzero(self._flags & _RULED).tolist():
            labels = table.labels[sid]
            job = (labels.get(JOB_LABEL) if self._flags[sid] & _TRAINER
                   else fresh.get(table.hosts[sid]))
            if job:
                key = (table.names[sid], job)
                group_of[sid] = self._group_ids.setdefault(key, len(self._group_ids))
                if group_of[sid] == len(self._groups):
                    self._groups.append(key)
        self._group_of, self._present = group_of, np.full(len(table), -1, np.int64)
        self._group_metric = np.array([self._metric_ids[m] for m, _ in self._groups], np.int64)

    # --- windows -----------------------------------------------------------------------
    def _close(self, due: int, now: float) -> list[Alert]:
        """Judge every buffered window before `due`; keep the rest for later."""
        sids, times, values = (np.concatenate(column) for column in zip(*self._buffer, strict=True))
        windows = np.floor(times / self.window_s).astype(np.int64)
        later = windows >= due
        self._buffer, self._next = [(sids[later], times[later], values[later])], due
        order = np.flatnonzero(~later)[np.argsort(windows[~later], kind="stable")]
        sids, times, values, windows = sids[order], times[order], values[order], windows[order]
        alerts: list[Alert] = []
        for a, n in zip(*(x.tolist() for x in _runs(windows)), strict=True):
            rows = slice(a, a + n)
            alerts += self._judge(int(windows[a]), sids[rows], times[rows], values[rows], now)
        return alerts

    def _judge(self, window: int, sids: Ints, times: Floats, values: Floats,
               now: float) -> list[Alert]:
        """One window: every group's median and spread at once, then each rule's verdict."""
        self._learn_jobs(window, sids)
        ruled = ((self._flags[sids] & _RULED) != 0) & np.isfinite(values)
        gauge, counter = ruled & ~self._counter[sids], ruled & self._counter[sids]
        gauge_sids, medians = _medians(sids[gauge], values[gauge])  # a member's statistic
        counter_sids, rates = self._rates(sids[counter], times[counter], values[counter])
        members, stats = np.concatenate([gauge_sids, counter_sids]), np.r_[medians, rates]
        groups = self._group_of[members]
        keep = np.flatnonzero((groups >= 0) & np.isfinite(stats))
        order = keep[np.lexsort((stats[keep], groups[keep]))]
        members, stats, groups = members[order], stats[order], groups[order]
        starts, counts = _runs(groups)
        group_median = _middle(stats, starts, counts)
        median = np.repeat(group_median, counts)
        distance = np.abs(stats - median)
        mad = _middle(distance[np.lexsort((distance, groups))], starts, counts)
        base = np.repeat(np.maximum(MAD_TO_SIGMA * mad, REL_SPREAD_FLOOR * group_median), counts)
        peers = np.repeat(counts, counts)
        # Two cannot tell which of them is odd; ratios need a positive scale.
        judged = (peers >= MIN_PEERS) & (median > 0)
        self._present[members[judged]] = window
        metric_of = self._group_metric[groups]
        alerts: list[Alert] = []
        for index, rule in enumerate(self._rules):
            found: dict[int, _Finding] = {}
            pick = judged & (metric_of == self._rule_metric[index])
            if pick.any():
                with np.errstate(divide="ignore", invalid="ignore"):
                    change, z = stats / median - 1, (stats - median) / np.maximum(base, rule.floor)
                side = {"above": 1.0, "below": -1.0}.get(rule.direction)
                away, far = ((np.abs(change), np.abs(z)) if side is None
                             else (side * change, side * z))  # distance on the rule's side
                hit = (away >= rule.change) & (far >= rule.z_bound)
                for i in np.flatnonzero(pick & hit).tolist():
                    found[int(members[i])] = _Finding(
                        float(stats[i]), float(median[i]), float(z[i]), int(peers[i]),
                        self._groups[int(groups[i])][1])
            alerts += self._advance(index, found, window, sids, times, values, now)
        self._previous = (window, sids, times, values)
        return alerts

    def _rates(self, sids: Ints, times: Floats, values: Floats) -> tuple[Ints, Floats]:
        """Each counter's rise per second since its last point judged (or its first in this
        window, after a gap); NaN where it was reset."""
        order = np.lexsort((times, sids))
        sids, times, values = sids[order], times[order], values[order]
        starts, counts = _runs(sids)
        first, ends = sids[starts], starts + counts - 1
        since_t, since_v = self._last_t[first], self._last_v[first]
        with np.errstate(invalid="ignore"):
            stale = ~(times[starts] - since_t <= 2 * self.window_s)  # NaN: none yet
            since_t[stale], since_v[stale] = times[starts][stale], values[starts][stale]
            rise, span = values[ends] - since_v, times[ends] - since_t
            rates = np.where((span > 0) & (rise >= 0), rise / np.maximum(span, 1e-9), np.nan)
        self._last_t[first], self._last_v[first] = times[ends], values[ends]
        return first, rates

    # --- episodes ----------------------------------------------------------------------
    def _advance(self, index: int, found: dict[int, _Finding], window: int, sids: Ints,
                 times: Floats, values: Floats, now: float) -> list[Alert]:
        rule, episodes = self._rules[index], self._episodes[index]
        alerts: list[Alert] = []
        for sid, finding in found.items():
            episode = episodes.get(sid)
            if episode is None or window - episode.last > self.gap_windows + 1:
                onset = self._onset(sid, finding, window, sids, times, values)
                episode = episodes[sid] = _Episode(onset, window)
            episode.deviant, episode.calm, episode.last = episode.deviant + 1, 0, window
            if not episode.fired and episode.deviant >= rule.windows:
                episode.fired = True
                alerts.append(self._alert(rule, sid, episode, finding, now))
        for sid in [s for s in episodes if s not in found]:
            episode = episodes[sid]
            if self._present[sid] == window:  # judged and back in line
                episode.last, episode.calm = window, episode.calm + 1
                if episode.calm >= self.clear_windows:
                    del episodes[sid]
            elif window - episode.last > self.gap_windows + 1:
                del episodes[sid]  # gone quiet: whatever comes next is a new episode
        return alerts

    def _onset(self, sid: int, finding: _Finding, window: int, sids: Ints, times: Floats,
               values: Floats) -> float:
        """When the member crossed over: its first sample in `window` past the midpoint to the
        peers' median, or the start of the run of such samples leading up to it from the
        window before (a change late in a window moves only the next window's median)."""
        start = window * self.window_s
        if self._counter[sid]:
            return start
        last, old_sids, old_times, old_values = self._previous
        mine, before = sids == sid, (old_sids == sid) & (last == window - 1)
        when = np.concatenate([old_times[before], times[mine]])
        order = np.argsort(when, kind="stable")
        value = np.concatenate([old_values[before], values[mine]])[order]
        when, middle = when[order], 0.5 * (finding.stat + finding.median)
        past = (value - middle) * (finding.stat - finding.median) >= 0  # on the member's side
        first = np.flatnonzero(past & (when >= start))
        if not first.size:
            return start
        calm = np.flatnonzero(~past[:first[0]])
        return float(when[calm[-1] + 1 if calm.size else 0])

    def _alert(self, rule: _Rule, sid: int, episode: _Episode, finding: _Finding,
               now: float) -> Alert:
        host, labels, metric = self._table.hosts[sid], self._table.labels[sid], rule.metric
        entity = labels.get(ENTITY_ATTR) or self._resolver.resolve(host, labels, metric)
        ratio, per = finding.stat / finding.median, "/s" if self._counter[sid] else ""  # a rate
        evidence = {
            **{k: v for k, v in labels.items() if k != ENTITY_ATTR}, "metric": metric,
            "value": f"{finding.stat:.6g}{per}", "peer_median": f"{finding.median:.6g}{per}",
            "ratio": f"{ratio:.4f}", "robust_z": f"{finding.z:.3g}", "peers": str(finding.peers),
            "windows": str(episode.deviant), "window_s": f"{self.window_s:g}",
            "job": finding.job, "condition": rule.condition}
        what = rule.title if rule.fault_id != ANOMALY_ID else f"{metric} stands out"
        return Alert(
            fault_id=rule.fault_id, entity=entity, node=host, severity=rule.severity,
            summary=(f"{what} on {entity.partition(':')[2] or host}: {ratio:.3f}x the median "
                     f"of {finding.peers} peers in job {finding.job}"),
            detector=self.name, observed_at=episode.onset, detected_at=now, evidence=evidence)


def _medians(sids: Ints, values: Floats) -> tuple[Ints, Floats]:
    """Each series' median: one sort by (series, value), then the middle of each run."""
    order = np.lexsort((values, sids))
    sids, values = sids[order], values[order]
    starts, counts = _runs(sids)
    return sids[starts], _middle(values, starts, counts)


def _runs(keys: Ints) -> tuple[Ints, Ints]:
    """Where each run of equal, sorted `keys` starts, and how long it is."""
    if not len(keys):
        return keys, keys
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return starts, np.diff(np.r_[starts, len(keys)])


def _middle(values: Floats, starts: Ints, counts: Ints) -> Floats:
    """The median of each run of `values`, each run sorted."""
    middle: Floats = 0.5 * (values[starts + (counts - 1) // 2] + values[starts + counts // 2])
    return middle
