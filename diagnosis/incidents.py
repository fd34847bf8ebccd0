"""The incident stage: correlates alerts from Kafka, stores them, publishes incidents."""

from __future__ import annotations

import logging
from typing import Any

from vigil.diagnosis.correlate import Correlator

from vigil.bus import Bus, Topic
from vigil.records import Alert, RecordError, from_json, to_json
from vigil.stage import BadMessage, ConsumerStage
from vigil.store import Store

log = logging.getLogger(__name__)


class IncidentStage(ConsumerStage):
    def __init__(
        self, bus: Bus, store: Store, correlator: Correlator, group: str = "vigil-incidents"
    ) -> None:
        super().__init__(bus, "incidents", group, [Topic.ALERTS])
        self.store = store
        self.correlator = correlator

    def handle(self, message: Any, now: float) -> None:
        try:
            alert = from_json(Alert, message.value)
        except RecordError as exc:
            raise BadMessage(f"not an alert: {exc}") from exc
        result = self.correlator.add(alert, now)
        if result is None:
            self.counters.add_dropped()  # a repeat of an alert the incident already holds
            return
        incident = result.incident
        self.store.save_incident(incident)
        self.store.add_alert(alert, incident.id)
        self.bus.publish(Topic.INCIDENTS, to_json(incident), key=alert.node)
        self.counters.add_sent()
        if result.is_new:
            log.info("incident opened", extra={"incident": incident.id,
                                               "root": incident.root_entity,
                                               "fault": incident.root_fault_id})
