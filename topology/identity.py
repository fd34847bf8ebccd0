"""Which entity a metric sample or log line is about, from the names telemetry already carries.

Exporters name things their own way: dcgm-exporter a GPU by ``gpu`` index, ``UUID`` and
``pci_bus_id``; node-exporter an InfiniBand port by ``device`` and ``port``; OpenTelemetry a
pod by ``k8s.namespace.name`` and ``k8s.pod.name``. `EntityResolver` turns those into the
topology's ids. With a graph it asks the graph's indices first, so a GPU found by UUID gets
its inventory id even where the exporter's index numbering differs; without one (a node
collector has no graph) it builds the id the way the inventory does, ``gpu:<host>/<index>``.
Answers are cached per label set: a node's thousands of samples share a few dozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from vigil.topology.model import EntityKind, entity_id

if TYPE_CHECKING:  # node collectors use this without a graph: they need not load networkx
    from vigil.topology.graph import Topology

ENTITY_ATTR: Final = "vigil.entity"
_CACHE_LIMIT: Final = 100_000


class EntityResolver:
    def __init__(self, topo: Topology | None = None) -> None:
        self.topo = topo
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def resolve(self, host: str, labels: Mapping[str, str], metric: str = "") -> str:
        """The id of what `labels` describe on `host` (the node itself if nothing finer)."""
        key = (host, tuple(labels.items()))
        found = self._cache.get(key)
        if found is None:
            found = self._resolve(host, labels, metric)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _resolve(self, host: str, labels: Mapping[str, str], metric: str) -> str:
        given = labels.get(ENTITY_ATTR)
        if given:
            return given
        pod, namespace = labels.get("k8s.pod.name"), labels.get("k8s.namespace.name")
        if pod and namespace:
            return entity_id(EntityKind.POD, namespace, pod)
        for candidate in self._gpu(host, labels), self._nic(host, labels, metric):
            if candidate is not None:
                return candidate
        return entity_id(EntityKind.NODE, host) if host else ""

    def _gpu(self, host: str, labels: Mapping[str, str]) -> str | None:
        topo = self.topo
        if topo is not None:
            uuid = labels.get("UUID")
            found = topo.index("UUID", uuid) if uuid else None
            if found is None and (pci := labels.get("pci_bus_id")) and host:
                found = topo.gpu_by_pci(host, pci)
            if found is not None:
                return found
        index = labels.get("gpu")
        if index is not None and index.isdigit() and host:
            return entity_id(EntityKind.GPU, host, index)
        return None

    def _nic(self, host: str, labels: Mapping[str, str], metric: str) -> str | None:
        device = labels.get("device")
        if not device or not host or not metric.startswith("node_infiniband_"):
            return None
        if self.topo is not None:
            found = self.topo.index("ib.device", f"{host}|{device}")
            if found is not None:
                return found
        return entity_id(EntityKind.NIC, host, device)
