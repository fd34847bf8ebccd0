"""Keeps a process's topology current from the inventory snapshots on ``vigil.inventory``.

Every process that asks the graph questions needs every snapshot, so each joins its own
consumer group (a broadcast, not a share) and reads the topic from its start: snapshots are
whole and idempotent, so replaying them rebuilds the same graph. A snapshot older than the
last one applied from the same source is skipped: the graph never moves back in time.

The graph is written to a file now and then (atomically), so `vigil topo` and post-mortems
see the live cluster, history included, without a broker.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from vigil.topology.changes import SnapshotError, apply_snapshot, decode_snapshot
from vigil.topology.graph import Topology

from vigil.bus import Bus, Topic
from vigil.stage import BadMessage, ConsumerStage

log = logging.getLogger(__name__)


class LiveTopology:
    """A Topology shared by the threads of one process; hold `lock` while reading it."""

    def __init__(self, topo: Topology | None = None) -> None:
        self.topo = topo if topo is not None else Topology()
        self.lock = threading.RLock()
        self.version = 0  # increases with every change applied


class InventoryStage(ConsumerStage):
    def __init__(self, bus: Bus, live: LiveTopology, save_to: Path | None = None,
                 save_every_s: float = 10.0, group: str | None = None) -> None:
        group = group or f"vigil-topology-{uuid.uuid4().hex[:12]}"
        super().__init__(bus, "inventory", group, [Topic.INVENTORY])
        self.live = live
        self.save_to = save_to
        self.save_every_s = save_every_s
        self._latest: dict[str, float] = {}  # source -> `at` of the last snapshot applied
        self._saved_version = 0
        self._saved_at = 0.0

    def handle(self, message: Any, now: float) -> None:
        try:
            snapshot = decode_snapshot(message.value or b"")
        except SnapshotError as exc:
            raise BadMessage(f"not an inventory snapshot: {exc}") from exc
        if snapshot.at < self._latest.get(snapshot.source, float("-inf")):
            self.counters.add_dropped()
            return
        with self.live.lock:
            try:
                result = apply_snapshot(self.live.topo, snapshot)
            except (SnapshotError, ValueError, KeyError) as exc:
                raise BadMessage(f"snapshot from {snapshot.source} at {snapshot.at} does not "
                                 f"apply: {exc}") from exc
            self.live.version += 1
        self._latest[snapshot.source] = snapshot.at
        self.counters.add_sent()
        if result.added or result.retired or result.related or result.unrelated:
            log.info("topology updated", extra={
                "source": snapshot.source, "added": result.added, "updated": result.updated,
                "retired": result.retired, "related": result.related,
                "unrelated": result.unrelated, "dangling": result.dangling})
        self._save_if_due()

    def _save_if_due(self, force: bool = False) -> None:
        if self.save_to is None or self.live.version == self._saved_version:
            return
        if not force and time.monotonic() - self._saved_at < self.save_every_s:
            return
        with self.live.lock:
            self.live.topo.save(self.save_to)
            self._saved_version = self.live.version
        self._saved_at = time.monotonic()

    def shutdown(self) -> None:
        super().shutdown()
        self._save_if_due(force=True)
