"""Score Vigil's alerts and incidents against a simulated run's ground truth.

Pure: no I/O, no clock; the same inputs always give the same `Scores`. These rules define
the benchmark, so change them only on purpose.

Windows. A fault's window is [onset - 5 s, end + grace_s], both ends included: the 5 s
allows for clock skew between the simulator and the collectors, the grace for detectors
that need a few samples. A healthy window is [start, end] of a `HealthyWindow`.

Alerts. An alert matches a fault when `observed_at` lies in the fault's window and either
`alert.entity` is one of `fault.affected` or `alert.node` is one of `fault.nodes`. An alert
may match several overlapping faults.

- Detection: a fault is detected when at least one alert matches it;
  recall = detected faults / faults. It is named when one of those alerts carries the
  fault's own mode (`alert.fault_id == fault.fault_id`); named_recall = named faults / faults.
- Time to first alert: min(`detected_at`) over the matching alerts - onset, clamped at 0.
- Precision: only alerts that lie in some fault's window or some healthy window are judged
  (the rest, e.g. alerts during set-up, are ignored); precision = judged alerts that match
  some fault / judged alerts. Per layer, the judged alerts are those in that layer's fault
  windows, and an alert counts as true when it matches any fault (of any layer): an alert
  about a concurrent fault of another layer is not a false alarm.
- False alerts: alerts in a healthy window that match no fault. They are counted overall
  only (a false alert has no layer): false_alerts_per_1000_node_hours = false alerts /
  (sum over healthy windows of nodes x hours) x 1000, None when there is no healthy time.

Incidents. An incident matches a fault when `opened_at` lies in the fault's window and its
root entity or one of its `entities` is in `fault.affected`, or the node of one of them
(see `entity_node`) is in `fault.nodes`.

- Ranked candidates: `incident.candidates` when the record has that field and it is not
  empty, else `(incident.root_entity,)`.
- Of several matching incidents the best is used: the earliest whose root entity is the
  fault's root, else the earliest with the root among its first three candidates, else the
  earliest.
- Top-1 is correct when the best incident's root entity is the fault's root; top-3 when it
  is that or is among the first three candidates. Both are divided by all faults: a fault
  with no matching incident counts as wrong.
- Time to root cause: the best incident's `opened_at` - onset, clamped at 0, for faults
  whose top-1 is correct.

Percentiles (p50/p95/p99) use linear interpolation (`numpy.percentile`) and are None when
there is nothing to take them over; so are ratios whose denominator is 0.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np
from vigil.sim.truth import LAYERS, HealthyWindow, TruthFault

from vigil.records import Alert

SKEW_S = 5.0  # how early, before a fault's onset, evidence of it is still accepted
TOP_K = 3
# Entity kinds whose id is "<kind>:<host>" or "<kind>:<host>/<part>"; other kinds (switch,
# storage, job, rank, ...) name something that is not on one host.
NODE_KINDS = frozenset({"node", "host", "gpu", "nic", "nvlink", "pcie", "cpu", "dimm", "disk"})


class IncidentLike(Protocol):
    """What scoring reads from an incident; `vigil.records.Incident` has all of it."""

    @property
    def root_entity(self) -> str: ...

    @property
    def entities(self) -> tuple[str, ...]: ...

    @property
    def opened_at(self) -> float: ...


@dataclass(frozen=True, slots=True)
class FaultResult:
    """How Vigil did on one injected fault."""

    scenario: str
    fault_id: str
    layer: str
    root_entity: str  # the true root
    detected: bool
    named: bool  # a matching alert names the fault's own mode
    first_alert_s: float | None  # first matching alert's detected_at - onset
    top1: bool
    top3: bool
    root_cause_s: float | None  # best incident's opened_at - onset, when top1
    predicted_root: str | None  # best matching incident's root entity


@dataclass(frozen=True, slots=True)
class LayerScores:
    """Detection and root-cause figures over one set of faults (one layer, or all)."""

    faults: int
    detected: int
    recall: float | None
    named_recall: float | None
    alerts: int  # alerts judged for precision
    true_alerts: int  # of those, alerts matching some fault
    precision: float | None
    alert_latency_p50_s: float | None
    alert_latency_p95_s: float | None
    alert_latency_p99_s: float | None
    root_cause_top1: float | None
    root_cause_top3: float | None
    root_cause_latency_p50_s: float | None
    root_cause_latency_p95_s: float | None
    per_fault: list[FaultResult]

    def flat(self) -> dict[str, float | int | None]:
        """Every figure except `per_fault`, by field name."""
        out: dict[str, float | int | None] = {}
        for f in fields(self):
            if f.name != "per_fault":
                out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True, slots=True)
class Scores:
    """A run's scores: overall, per layer, and false alerts in healthy time."""

    overall: LayerScores
    by_layer: dict[str, LayerScores]  # only layers with at least one fault, in LAYERS order
    false_alerts: int
    healthy_node_hours: float
    false_alerts_per_1000_node_hours: float | None
    grace_s: float

    def flat(self) -> dict[str, float | int | None]:
        """One flat JSON-able dict: overall figures by name, then "<layer>.<figure>".

        Every layer of LAYERS is present (zero faults, None figures where it had none), so
        the keys of two runs line up.
        """
        out = self.overall.flat()
        out["false_alerts"] = self.false_alerts
        out["healthy_node_hours"] = self.healthy_node_hours
        out["false_alerts_per_1000_node_hours"] = self.false_alerts_per_1000_node_hours
        layers = list(LAYERS) + sorted(set(self.by_layer) - set(LAYERS))
        for layer in layers:
            scores = self.by_layer.get(layer) or _layer_scores([], 0, 0)
            for name, value in scores.flat().items():
                out[f"{layer}.{name}"] = value
        return out


def entity_node(entity: str) -> str | None:
    """The host an entity id lives on: "gpu:gpu-a-003/5" -> "gpu-a-003"; None for a switch."""
    kind, sep, rest = entity.partition(":")
    if not sep or kind not in NODE_KINDS or not rest:
        return None
    return rest.split("/", 1)[0]


def ranked_candidates(incident: IncidentLike) -> tuple[str, ...]:
    """The incident's ranked root candidates, or just its root when it has none."""
    candidates: Sequence[str] = getattr(incident, "candidates", ())
    return tuple(candidates) if candidates else (incident.root_entity,)


def score(
    faults: Sequence[TruthFault],
    healthy: Sequence[HealthyWindow],
    alerts: Sequence[Alert],
    incidents: Sequence[IncidentLike],
    grace_s: float = 300.0,
) -> Scores:
    """Score `alerts` and `incidents` against the truth by the rules in this module's doc."""
    ordered = sorted(alerts, key=lambda a: a.observed_at)
    times = [a.observed_at for a in ordered]

    def between(start: float, end: float) -> range:
        return range(bisect_left(times, start), bisect_right(times, end))

    in_window: list[range] = []  # per fault: indices into `ordered` in its window
    matching: list[list[int]] = []  # per fault: those that also match it
    for fault in faults:
        window = between(fault.onset - SKEW_S, fault.end + grace_s)
        in_window.append(window)
        matching.append([i for i in window if _alert_matches(ordered[i], fault)])
    matched = {i for found in matching for i in found}
    in_healthy = {i for w in healthy for i in between(w.start, w.end)}
    false_alerts = len(in_healthy - matched)
    node_hours = sum((w.nodes * (w.end - w.start) / 3600.0 for w in healthy), 0.0)

    results = [
        _fault_result(fault, [ordered[i] for i in found], incidents, grace_s)
        for fault, found in zip(faults, matching, strict=True)
    ]
    judged = {i for window in in_window for i in window} | in_healthy
    overall = _layer_scores(results, len(judged), len(judged & matched))

    by_layer: dict[str, LayerScores] = {}
    present = {fault.layer for fault in faults}
    for layer in [x for x in LAYERS if x in present] + sorted(present - set(LAYERS)):
        chosen = [n for n, fault in enumerate(faults) if fault.layer == layer]
        layer_judged = {i for n in chosen for i in in_window[n]}
        by_layer[layer] = _layer_scores(
            [results[n] for n in chosen], len(layer_judged), len(layer_judged & matched)
        )
    return Scores(
        overall=overall,
        by_layer=by_layer,
        false_alerts=false_alerts,
        healthy_node_hours=node_hours,
        false_alerts_per_1000_node_hours=(
            false_alerts / node_hours * 1000.0 if node_hours > 0 else None
        ),
        grace_s=grace_s,
    )


def _alert_matches(alert: Alert, fault: TruthFault) -> bool:
    return alert.entity in fault.affected or alert.node in fault.nodes


def _incident_matches(incident: IncidentLike, fault: TruthFault, grace_s: float) -> bool:
    if not fault.onset - SKEW_S <= incident.opened_at <= fault.end + grace_s:
        return False
    for entity in (incident.root_entity, *incident.entities):
        if entity in fault.affected or entity_node(entity) in fault.nodes:
            return True
    return False


def _fault_result(
    fault: TruthFault,
    alerts: Sequence[Alert],
    incidents: Sequence[IncidentLike],
    grace_s: float,
) -> FaultResult:
    first_alert = (
        max(0.0, min(a.detected_at for a in alerts) - fault.onset) if alerts else None
    )
    best = _best_incident(fault, [i for i in incidents if _incident_matches(i, fault, grace_s)])
    top1 = best is not None and best.root_entity == fault.root_entity
    top3 = best is not None and (top1 or fault.root_entity in ranked_candidates(best)[:TOP_K])
    return FaultResult(
        scenario=fault.scenario,
        fault_id=fault.fault_id,
        layer=fault.layer,
        root_entity=fault.root_entity,
        detected=bool(alerts),
        named=any(a.fault_id == fault.fault_id for a in alerts),
        first_alert_s=first_alert,
        top1=top1,
        top3=top3,
        root_cause_s=(
            max(0.0, best.opened_at - fault.onset) if best is not None and top1 else None
        ),
        predicted_root=best.root_entity if best is not None else None,
    )


def _best_incident(fault: TruthFault, found: list[IncidentLike]) -> IncidentLike | None:
    """Earliest with the right root, else earliest with it in the top 3, else earliest."""
    found = sorted(found, key=lambda i: i.opened_at)  # stable: ties keep input order
    right = [i for i in found if i.root_entity == fault.root_entity]
    near = [i for i in found if fault.root_entity in ranked_candidates(i)[:TOP_K]]
    for candidates in (right, near, found):
        if candidates:
            return candidates[0]
    return None


def _layer_scores(results: list[FaultResult], judged: int, true_alerts: int) -> LayerScores:
    total = len(results)
    detected = sum(r.detected for r in results)
    alert_latency = [r.first_alert_s for r in results if r.first_alert_s is not None]
    cause_latency = [r.root_cause_s for r in results if r.root_cause_s is not None]
    return LayerScores(
        faults=total,
        detected=detected,
        recall=_ratio(detected, total),
        named_recall=_ratio(sum(r.named for r in results), total),
        alerts=judged,
        true_alerts=true_alerts,
        precision=_ratio(true_alerts, judged),
        alert_latency_p50_s=_percentile(alert_latency, 50),
        alert_latency_p95_s=_percentile(alert_latency, 95),
        alert_latency_p99_s=_percentile(alert_latency, 99),
        root_cause_top1=_ratio(sum(r.top1 for r in results), total),
        root_cause_top3=_ratio(sum(r.top3 for r in results), total),
        root_cause_latency_p50_s=_percentile(cause_latency, 50),
        root_cause_latency_p95_s=_percentile(cause_latency, 95),
        per_fault=results,
    )


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _percentile(values: list[float], q: float) -> float | None:
    # float() so that flat() holds plain floats, not numpy scalars, for json.dumps.
    return float(np.percentile(values, q)) if values else None
