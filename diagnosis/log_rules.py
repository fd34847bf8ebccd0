"""Rule detector: log lines that match a fault mode's log signals become alerts."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from vigil.diagnosis.library import FaultLibrary, FaultMode
from vigil.diagnosis.log_match import LogMatcher

from vigil.frames import MetricFrame, SeriesTable
from vigil.otlp import LogBatch
from vigil.records import Alert


def pci_key(address: str) -> str:
    """`bus:device` of a PCI address, lower case: '00000000:3A:00.0' and '0000:3a:00' -> '3a:00'."""
    parts = address.lower().split(":")
    return f"{parts[-2]}:{parts[-1].split('.')[0]}" if len(parts) >= 2 else address.lower()


class LogRuleDetector:
    """Matches every log line against the library's log signals.

    GPU faults name the GPU by PCI address; the detector learns which address is which GPU
    index from the `pci_bus_id` and `gpu` labels that dcgm-exporter puts on every metric.
    """

    name = "log_rules"

    def __init__(self, library: FaultLibrary) -> None:
        self._matcher = LogMatcher(library)
        self._gpu_by_pci: dict[str, dict[str, str]] = defaultdict(dict)
        self._table: SeriesTable | None = None
        self._read = np.zeros(0, dtype=bool)  # per series id: its labels have been read
        self._unread = False  # some series of the table may not have been read

    def observe_metrics(self, frame: MetricFrame, now: float) -> list[Alert]:
        # Labels belong to series, not samples: read each series once, when first seen.
        table = frame.table
        if table is not self._table:
            self._table, self._read, self._unread = table, np.zeros(0, dtype=bool), True
        if len(self._read) < len(table):
            self._read = np.concatenate(
                [self._read, np.zeros(len(table) - len(self._read), dtype=bool)])
            self._unread = True
        if not self._unread:  # the usual case once a cluster has been seen: nothing to learn
            return []
        seen = np.unique(frame.series)
        for sid in seen[~self._read[seen]].tolist():
            labels = table.labels[sid]
            pci, gpu = labels.get("pci_bus_id"), labels.get("gpu")
            if pci and gpu is not None:
                self._gpu_by_pci[table.hosts[sid]][pci_key(pci)] = gpu
        self._read[seen] = True
        self._unread = not self._read.all()
        return []

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]:
        host = batch.resource.get("host.name", "")
        alerts: list[Alert] = []
        lines = batch.lines
        for index, mode, match in self._matcher.scan([line.body for line in lines]):
            line = lines[index]
            evidence = {k: v for k, v in match.groupdict().items() if v is not None}
            evidence["log"] = line.body[:500]
            # A scheduler's log speaks about other hosts: the subject is the one named.
            node = evidence.get("node", host) if mode.layer == "scheduler" else host
            if node != host:
                evidence["reported_by"] = host
            alerts.append(Alert(
                fault_id=mode.id, entity=self._entity(node, mode, evidence), node=node,
                severity=mode.severity, summary=f"{mode.title} on {node}",
                detector=self.name, observed_at=line.timestamp, detected_at=now,
                evidence=evidence,
            ))
        return alerts

    def _entity(self, node: str, mode: FaultMode, evidence: dict[str, str]) -> str:
        pci = evidence.get("pci")
        if pci is not None:
            gpu = self._gpu_by_pci[node].get(pci_key(pci))
            return f"gpu:{node}/{gpu}" if gpu is not None else f"node:{node}"
        return f"node:{node}"
