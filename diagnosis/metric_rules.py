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
from collections import defaultdict, deque
from dataclasses import dataclass, field

from vigil.diagnosis.library import FaultLibrary, FaultMode, MetricSignal
from vigil.topology.identity import ENTITY_ATTR, EntityResolver

from vigil.otlp import LogBatch, MetricBatch, MetricSample
from vigil.records import Alert

_Key = tuple[str, int, str, tuple[tuple[str, str], ...]]  # mode, signal, host, labels


@dataclass(slots=True)
class _State:
    since: float | None = None  # when the condition began to hold
    fired: bool = False
    points: deque[tuple[float, float]] = field(default_factory=deque)


class MetricRuleDetector:
    name = "metric_rules"

    def __init__(self, library: FaultLibrary) -> None:
        self._signals: dict[str, list[tuple[FaultMode, int, MetricSignal]]] = defaultdict(list)
        for mode in library:
            for index, signal in enumerate(mode.signals.metrics):
                if signal.condition != "peer_outlier":
                    self._signals[signal.metric].append((mode, index, signal))
        self._state: dict[_Key, _State] = {}
        self._resolver = EntityResolver()

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]:
        return []

    def observe_metrics(self, batch: MetricBatch, now: float) -> list[Alert]:
        host = batch.resource.get("host.name", "")
        alerts: list[Alert] = []
        for sample in batch.samples:
            rules = self._signals.get(sample.name)
            if not rules:
                continue
            labels = tuple(sorted(sample.labels.items()))
            for mode, index, signal in rules:
                state = self._state.setdefault((mode.id, index, host, labels), _State())
                onset = _advance(state, signal, sample)
                if onset is None:
                    continue
                alerts.append(self._alert(mode, signal, sample, host, onset, now))
        return alerts

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
