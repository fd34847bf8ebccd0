"""Rule detector: log lines that match a fault mode's log signals become alerts."""

from __future__ import annotations

from collections import defaultdict

from vigil.diagnosis.library import FaultLibrary, FaultMode
from vigil.diagnosis.log_match import LogMatcher

from vigil.otlp import LogBatch, MetricBatch
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

    def observe_metrics(self, batch: MetricBatch, now: float) -> list[Alert]:
        node = batch.resource.get("host.name", "")
        known = self._gpu_by_pci[node]
        for sample in batch.samples:
            pci, gpu = sample.labels.get("pci_bus_id"), sample.labels.get("gpu")
            if pci and gpu is not None:
                known[pci_key(pci)] = gpu
        return []

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]:
        host = batch.resource.get("host.name", "")
        alerts: list[Alert] = []
        for line in batch.lines:
            for mode, match in self._matcher.matches(line.body):
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
