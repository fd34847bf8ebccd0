"""Correlation: group alerts into incidents by time and place, and pick the probable root cause."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from vigil.diagnosis.library import FaultLibrary

from vigil.records import Alert, Incident, IncidentState


@dataclass
class _Group:
    incident: Incident
    alerts: dict[str, Alert] = field(default_factory=dict)  # by fingerprint


@dataclass(frozen=True, slots=True)
class Correlation:
    incident: Incident
    is_new: bool


class Correlator:
    """Alerts on the same node within `window_s` of the group's last alert form one incident.

    Pure: no I/O; `now` is passed in. The root cause is the alert that the library says
    causes others in the group (its `downstream`), else the most severe, else the earliest.
    """

    def __init__(self, library: FaultLibrary, window_s: float) -> None:
        self.library = library
        self.window_s = window_s
        self._groups: dict[str, _Group] = {}  # by node

    def add(self, alert: Alert, now: float) -> Correlation | None:
        """Fold `alert` in; None when it repeats an alert the open incident already has."""
        group = self._groups.get(alert.node)
        if group is not None and now - group.incident.updated_at > self.window_s:
            group = None
        if group is not None and alert.fingerprint in group.alerts:
            return None
        is_new = group is None
        if group is None:
            group = _Group(incident=_blank_incident(alert, now))
            self._groups[alert.node] = group
        group.alerts[alert.fingerprint] = alert
        group.incident = self._summarise(group, now)
        return Correlation(group.incident, is_new)

    def _summarise(self, group: _Group, now: float) -> Incident:
        alerts = list(group.alerts.values())
        root = self._root(alerts)
        mode = self.library.get(root.fault_id) if root.fault_id in self.library else None
        title = mode.title if mode else root.fault_id
        others = len(alerts) - 1
        explanation = (
            f"{root.entity} reported {title} at {_clock(root.observed_at)}"
            + (f"; {others} related alert{'s' if others != 1 else ''} on {root.node}"
               if others else "")
            + (f"; likely causes: {', '.join(mode.likely_causes)}" if mode and mode.likely_causes
               else "")
            + "."
        )
        entities = tuple(sorted({a.entity for a in alerts}))
        return replace(
            group.incident,
            title=f"{title} on {root.entity}",
            severity=max((a.severity for a in alerts), key=lambda s: s.rank),
            root_entity=root.entity,
            root_fault_id=root.fault_id,
            explanation=explanation,
            updated_at=now,
            alert_fingerprints=tuple(group.alerts),
            entities=entities,
            first_observed_at=min(a.observed_at for a in alerts),
        )

    def _root(self, alerts: list[Alert]) -> Alert:
        present = {a.fault_id for a in alerts}
        caused = {d for a in alerts if a.fault_id in self.library
                  for d in self.library.get(a.fault_id).downstream if d in present}
        uncaused = [a for a in alerts if a.fault_id not in caused]
        # A known cause of something here outranks an unrelated alert, however severe.
        causes = [a for a in uncaused if a.fault_id in self.library
                  and any(d in present for d in self.library.get(a.fault_id).downstream)]
        candidates = causes or uncaused or alerts
        return min(candidates, key=lambda a: (-a.severity.rank, a.observed_at))


def _blank_incident(alert: Alert, now: float) -> Incident:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return Incident(
        id=f"inc-{stamp}-{alert.fingerprint[:6]}", title="", severity=alert.severity,
        state=IncidentState.OPEN, root_entity=alert.entity, root_fault_id=alert.fault_id,
        explanation="", opened_at=now, updated_at=now,
    )


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + "Z"
