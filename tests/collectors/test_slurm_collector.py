"""SlurmCollector: inventory snapshots and state-change events, from a scripted scontrol.

The scontrol here is a small script that prints the text files a test writes, as Slurm
22.05's scontrol (no --json) would; tests/integration/test_slurm_topology.py runs the real one.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from collector_fakes import RecordingBus, Tally
from vigil.collectors.slurm import SlurmCollector
from vigil.topology.changes import decode_snapshot
from vigil.topology.model import EntityKind

from vigil.bus import Topic
from vigil.otlp import decode_logs

SCRIPT = """#!{python}
import pathlib, sys
here = pathlib.Path({folder!r})
if "--json" in sys.argv:
    sys.exit("scontrol: unrecognized option '--json'")
if (here / "down").exists():
    sys.exit("slurm_load_node error: Unable to contact slurm controller")
print((here / ("nodes.txt" if "node" in sys.argv else "jobs.txt")).read_text())
"""


class FakeSlurm:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scontrol = folder / "scontrol"
        self.scontrol.write_text(SCRIPT.format(python=sys.executable, folder=str(folder)))
        self.scontrol.chmod(self.scontrol.stat().st_mode | stat.S_IXUSR)
        self.set(nodes={"n1": "IDLE", "n2": "IDLE"}, jobs={})

    def set(self, nodes: dict[str, str], jobs: dict[str, tuple[str, str]]) -> None:
        (self.folder / "nodes.txt").write_text("".join(
            f"NodeName={n} State={s} Partitions=debug Reason={'boom' if 'DRAIN' in s else ''}\n"
            for n, s in nodes.items()))
        (self.folder / "jobs.txt").write_text("".join(
            f"JobId={j} JobName=train UserId=root(0) JobState={s} Partition=debug NodeList={n}\n"
            for j, (s, n) in jobs.items()))

    def down(self, is_down: bool) -> None:
        flag = self.folder / "down"
        if is_down:
            flag.touch()
        else:
            flag.unlink()


@pytest.fixture
def slurm(tmp_path: Path) -> FakeSlurm:
    return FakeSlurm(tmp_path)


@pytest.fixture
def collector(slurm: FakeSlurm, bus: RecordingBus, tally: Tally) -> SlurmCollector:
    c = SlurmCollector(bus, interval_s=1.0, scontrol=str(slurm.scontrol))
    c.counters = tally.component
    return c


def events(bus: RecordingBus) -> list[tuple[str | None, str, str, str]]:
    """(key, event.name, severity, body) of every event published so far."""
    return [(m.key, line.attributes["event.name"], line.severity_text, line.body)
            for m in bus.published if m.topic == Topic.EVENTS
            for batch in decode_logs(m.value) for line in batch.lines]


def test_each_poll_publishes_the_inventory(collector: SlurmCollector, slurm: FakeSlurm,
                                           bus: RecordingBus) -> None:
    slurm.set(nodes={"n1": "ALLOCATED", "n2": "IDLE"}, jobs={"7": ("RUNNING", "n1")})
    collector.collect(100.0)
    [message] = [m for m in bus.published if m.topic == Topic.INVENTORY]
    assert message.key == "slurm"
    snapshot = decode_snapshot(message.value)
    assert (snapshot.source, snapshot.at) == ("slurm", 100.0)
    assert {e.id for e in snapshot.entities} == {
        "node:n1", "node:n2", "partition:debug", "job:slurm-7"}
    assert EntityKind.JOB in snapshot.kinds
    assert events(bus) == []  # healthy at first sight: nothing to say


def test_state_changes_become_events_once(collector: SlurmCollector, slurm: FakeSlurm,
                                          bus: RecordingBus) -> None:
    slurm.set(nodes={"n1": "ALLOCATED", "n2": "IDLE"}, jobs={"7": ("RUNNING", "n1")})
    collector.collect(100.0)
    slurm.set(nodes={"n1": "DOWN+DRAIN", "n2": "IDLE"}, jobs={"7": ("NODE_FAIL", "n1")})
    collector.collect(110.0)
    collector.collect(120.0)  # nothing changed since: nothing new
    assert events(bus) == [
        ("n1", "slurm.node.state", "Warning", "Slurm node n1 ALLOCATED -> DOWN,DRAIN: boom"),
        ("slurm-7", "slurm.job.state", "Warning", "Slurm job 7 (train) RUNNING -> NODE_FAIL"),
    ]
    slurm.set(nodes={"n1": "IDLE", "n2": "IDLE"}, jobs={})
    collector.collect(130.0)
    assert events(bus)[-1] == ("n1", "slurm.node.state", "Normal",
                               "Slurm node n1 DOWN,DRAIN -> IDLE")


def test_unhealthy_at_first_sight_is_reported(collector: SlurmCollector, slurm: FakeSlurm,
                                              bus: RecordingBus) -> None:
    slurm.set(nodes={"n1": "DOWN*", "n2": "IDLE"}, jobs={"8": ("FAILED", "n2")})
    collector.collect(100.0)
    assert [(key, name) for key, name, _, _ in events(bus)] == [
        ("n1", "slurm.node.state"), ("slurm-8", "slurm.job.state")]
    entity = decode_logs(bus.published[1].value)[0].resource["vigil.entity"]
    assert entity == "node:n1"


def test_slurm_down_is_counted_and_collection_goes_on(
        collector: SlurmCollector, slurm: FakeSlurm, bus: RecordingBus, tally: Tally) -> None:
    slurm.down(True)
    collector.collect(100.0)
    collector.collect(110.0)
    assert bus.published == []
    assert tally.totals()["errored"] == 2
    slurm.down(False)
    collector.collect(120.0)
    assert [m.topic for m in bus.published] == [Topic.INVENTORY]
