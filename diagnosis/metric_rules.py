"""Rule detector for metric conditions: the library's `above`, `below`, `increase` and `absent`
signals, each with its `for_s` duration, evaluated per series as samples stream in.

A series is one metric on one host with one label set (one GPU's temperature, one IB port's
counter). Each (signal, series) pair keeps a little state: since when its condition has held,
or for counters the recent (time, value) points. A mode is raised once when its condition has
held for `for_s`, with the onset as the alert's time, and may be raised again only after the
condition has cleared: a GPU that stays hot is one alert, not one per scrape.

`increase` reads a counter: it holds when the counter rose by more than `threshold` within the
last `for_s` (a drop is a counter reset, after which the window starts again). `absent` holds
while the series carries NaN or Inf. `peer_outlier` needs the series' peers and is left to
the peer-comparison detector.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from vigil.diagnosis.library import FaultLibrary, FaultMode, MetricSignal
from vigil.topology.identity import ENTITY_ATTR, EntityResolver

from vigil.frames import Floats, MetricFrame, SeriesTable
from vigil.otlp import MetricSample
from vigil.records import Alert

_Rule = tuple[FaultMode, MetricSignal]
Bools = npt.NDArray[np.bool_]


@dataclass(slots=True)
class _State:
    since: float | None = None  # when the condition began to hold
    fired: bool = False
    points: deque[tuple[float, float]] = field(default_factory=deque)


class MetricRuleDetector:
    """Per series, the library's metric conditions; numpy picks the rows that need a look.

    A row needs one when a condition could hold (above the lowest `above` bound, below the
    highest `below` bound, not finite, a counter that moved) or its series has a condition
    in progress. Everything else (nearly every sample of a healthy cluster) costs a few
    vectorised comparisons.
    """

    name = "metric_rules"
    # per-series arrays, indexed by series id (see _reset)
    _floor: Floats
    _ceiling: Floats
    _counts: Bools
    _last: Floats
    _active: Bools

    def __init__(self, library: FaultLibrary) -> None:
        self._by_metric: dict[str, list[_Rule]] = {}
        for mode in library:
            for signal in mode.signals.metrics:
                if signal.condition != "peer_outlier":
                    self._by_metric.setdefault(signal.metric, []).append((mode, signal))
        self._resolver = EntityResolver()
        self._reset(None)

    def observe_logs(self, batch: object, now: float) -> list[Alert]:
        return []

    def observe_metrics(self, frame: MetricFrame, now: float) -> list[Alert]:
        self._learn_series(frame.table)
        if not len(frame):
            return []
        sids, values = frame.series, frame.values
        counted = self._counts[sids]
        with np.errstate(invalid="ignore"):
            look = ((values > self._floor[sids]) | (values < self._ceiling[sids])
                    | ~np.isfinite(values) | self._active[sids])
            if counted.any():  # only counters need the value each row had before it
                look |= counted & (values != _previous_values(sids, values, self._last))
        self._last[sids] = values
        alerts: list[Alert] = []
        times = frame.times
        for row in np.flatnonzero(look).tolist():
            sid = int(sids[row])
            sample = MetricSample(frame.table.names[sid], float(values[row]),
                                  frame.table.labels[sid], float(times[row]))
            states = self._states[sid]
            for (mode, signal), state in zip(self._rules[sid], states, strict=True):
                onset = _advance(state, signal, sample)
                if onset is not None:
                    alerts.append(self._alert(mode, signal, sample, frame.table.hosts[sid],
                                              onset, now))
            self._active[sid] = any(s.since is not None for s in states)
        return alerts

    def _learn_series(self, table: SeriesTable) -> None:
        """Give every series new to this detector its rules and bounds."""
        if table is not self._table:
            self._reset(table)
        known, total = len(self._rules), len(table)
        if known == total:
            return
        grow = total - known
        self._floor = np.concatenate([self._floor, np.full(grow, np.inf)])
        self._ceiling = np.concatenate([self._ceiling, np.full(grow, -np.inf)])
        self._counts = np.concatenate([self._counts, np.zeros(grow, dtype=bool)])
        self._last = np.concatenate([self._last, np.full(grow, np.nan)])
        self._active = np.concatenate([self._active, np.zeros(grow, dtype=bool)])
        for sid in range(known, total):
            rules = self._by_metric.get(table.names[sid], [])
            self._rules.append(rules)
            if not rules:
                continue
            self._states[sid] = [_State() for _ in rules]
            for _, signal in rules:
                bound = signal.threshold
                if signal.condition == "above" and bound is not None:
                    self._floor[sid] = min(self._floor[sid], bound)
                elif signal.condition == "below" and bound is not None:
                    self._ceiling[sid] = max(self._ceiling[sid], bound)
                elif signal.condition == "increase":
                    self._counts[sid] = True

    def _reset(self, table: SeriesTable | None) -> None:
        """Forget every series: they are numbered afresh in `table`."""
        self._table = table
        self._rules: list[list[_Rule]] = []  # per series id
        self._states: dict[int, list[_State]] = {}  # per series id with rules, per rule
        self._floor = np.zeros(0)  # per series: a value above this may hold an `above`
        self._ceiling = np.zeros(0)  # ... below this may hold a `below`
        self._counts = np.zeros(0, dtype=bool)  # ... has an `increase` rule
        self._last = np.zeros(0)  # ... last value seen
        self._active = np.zeros(0, dtype=bool)  # ... a condition is in progress

    def _alert(self, mode: FaultMode, signal: MetricSignal, sample: MetricSample, host: str,
               onset: float, now: float) -> Alert:
        entity = sample.labels.get(ENTITY_ATTR) or self._resolver.resolve(
            host, sample.labels, sample.name)
        bound = "" if signal.threshold is None else f" {signal.threshold:g}"
        evidence = {"metric": sample.name, "value": f"{sample.value:g}",
                    "condition": f"{signal.condition}{bound} for {signal.for_s:g} s",
                    **{k: v for k, v in sample.labels.items() if k != ENTITY_ATTR}}
        return Alert(fault_id=mode.id, entity=entity, node=host, severity=mode.severity,
                     summary=f"{mode.title} on {entity.partition(':')[2] or host}",
                     detector=self.name, observed_at=onset, detected_at=now,
                     evidence=evidence)


def _previous_values(sids: np.ndarray, values: np.ndarray, last: np.ndarray) -> np.ndarray:
    """For each row, the value its series had just before it: earlier in the frame, or last."""
    order = np.argsort(sids, kind="stable")
    ordered = sids[order]
    before = np.empty_like(values)
    same = np.zeros(len(sids), dtype=bool)
    same[1:] = ordered[1:] == ordered[:-1]
    shifted = np.empty_like(values)
    shifted[1:] = values[order][:-1]
    before[order] = np.where(same, shifted, last[ordered])
    return before


def _advance(state: _State, signal: MetricSignal, sample: MetricSample) -> float | None:
    """Feed one sample; the onset time if the mode fires now, else None."""
    if _holds(state, signal, sample):
        if state.since is None:
            state.since = sample.timestamp
        # An increase already looked back over for_s; the others must hold that long.
        needed = 0.0 if signal.condition == "increase" else signal.for_s
        if not state.fired and sample.timestamp - state.since >= needed:
            state.fired = True
            return state.since
        return None
    state.since, state.fired = None, False
    return None


def _holds(state: _State, signal: MetricSignal, sample: MetricSample) -> bool:
    value, threshold = sample.value, signal.threshold
    if signal.condition == "absent":
        return not math.isfinite(value)
    if not math.isfinite(value):
        return False
    if signal.condition == "above":
        return threshold is not None and value > threshold
    if signal.condition == "below":
        return threshold is not None and value < threshold
    # increase: a rise of more than `threshold` within the last for_s (at least one step)
    points = state.points
    if points and value < points[-1][1]:
        points.clear()  # the counter was reset
    points.append((sample.timestamp, value))
    horizon = sample.timestamp - max(signal.for_s, 0.0)
    while len(points) > 2 and points[1][0] <= horizon:
        points.popleft()
    return threshold is not None and value - points[0][1] > threshold
