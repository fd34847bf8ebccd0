"""InventoryStage: snapshots from Kafka keep a live topology current and saved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from vigil.diagnosis.inventory_stage import InventoryStage, LiveTopology
from vigil.topology.changes import EntityRecord, InventorySnapshot, encode_snapshot
from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind

from vigil.stage import BadMessage


@dataclass
class Message:
    value: bytes
    topic: str = "vigil.inventory"
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


def slurm(at: float, *nodes: str) -> Message:
    snapshot = InventorySnapshot("slurm", at, frozenset({EntityKind.NODE}), tuple(
        EntityRecord(f"node:{n}", {"slurm.node": n, "slurm.state": "IDLE"}) for n in nodes))
    return Message(encode_snapshot(snapshot))


@pytest.fixture
def stage(tmp_path: Path) -> InventoryStage:
    bus: Any = None  # handle() never touches the bus
    return InventoryStage(bus, LiveTopology(), save_to=tmp_path / "topology.pickle",
                          save_every_s=0.0)


def test_snapshots_update_the_graph_and_its_file(stage: InventoryStage, tmp_path: Path) -> None:
    stage.handle(slurm(10.0, "n1", "n2"), now=0.0)
    stage.handle(slurm(20.0, "n1"), now=0.0)
    topo = stage.live.topo
    assert topo.exists("node:n1") and not topo.exists("node:n2")
    assert topo.exists("node:n2", at=15.0)
    saved = Topology.load(tmp_path / "topology.pickle")
    assert saved.exists("node:n1") and saved.exists("node:n2", at=15.0)
    assert stage.live.version == 2


def test_an_older_snapshot_than_the_last_applied_is_skipped(stage: InventoryStage) -> None:
    stage.handle(slurm(20.0, "n1"), now=0.0)
    stage.handle(slurm(10.0, "n1", "n2"), now=0.0)  # late, replayed or reordered
    assert not stage.live.topo.exists("node:n2")
    assert stage.live.version == 1


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "not an inventory snapshot"),
    (b'{"schema": 1, "source": "slurm", "at": 1, "kinds": ["node"], '
     b'"entities": [{"id": "node:a", "attrs": {"host.name": "a"}}]}', "carries no slurm"),
])
def test_bad_snapshots_are_bad_messages(stage: InventoryStage, payload: bytes,
                                        reason: str) -> None:
    with pytest.raises(BadMessage, match=reason):
        stage.handle(Message(payload), now=0.0)
    assert stage.live.version == 0
