"""snapshot_slurm against a real single-host Slurm (deploy/slurm/start.sh: munged, slurmctld and
slurmd n1..n3 on 127.0.0.1): a running job, a drained node and a cancelled job, as the graph
sees them over time. Needs root and Debian's slurm-wlm and munge (CI installs them)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vigil.collectors.slurm import SlurmCollector
from vigil.diagnosis.inventory_stage import InventoryStage, LiveTopology
from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, RelationKind
from vigil.topology.slurm import expand_hostlist, load_slurm, snapshot_slurm

from vigil.broker import EmbeddedBroker
from vigil.bus import Bus, Topic
from vigil.otlp import decode_logs
from vigil.settings import KafkaSettings

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).parents[2] / "deploy" / "slurm"
DEPENDS_ON = frozenset({RelationKind.DEPENDS_ON})


def _slurm(*args: str) -> str:
    """A Slurm client command's stdout (SLURM_CONF from the environment); fails on error."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def _job_state(job_id: str) -> str:
    """squeue's state of the job; "" once squeue no longer knows it."""
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                          text=True, timeout=20, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def _attrs(topo: Topology) -> dict[str, dict[str, str]]:
    return {eid: dict(entity.attrs) for eid in topo.entities()
            if (entity := topo.entity(eid)) is not None}


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm_conf() -> Iterator[str]:
    """A running cluster; SLURM_CONF points at it in os.environ while the module runs."""
    if shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists():
        pytest.skip("slurmctld is not installed (Debian: apt-get install slurm-wlm munge)")
    # Not pytest's tmp_path: its parents are mode 700, and munged (user munge) must reach
    # its socket folder inside this one.
    work = Path(tempfile.mkdtemp(prefix="vigil-slurm-"))
    work.chmod(0o755)
    try:
        started = subprocess.run([str(DEPLOY / "start.sh"), str(work)], capture_output=True,
                                 text=True, timeout=60, check=False)
        assert started.returncode == 0, f"start.sh failed:\n{started.stdout}{started.stderr}"
        conf = started.stdout.strip().splitlines()[-1]
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", conf)
            yield conf
    finally:
        subprocess.run([str(DEPLOY / "stop.sh"), str(work)], capture_output=True, timeout=60,
                       check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_snapshots_follow_the_cluster(slurm_conf: str, tmp_path: Path) -> None:
    assert os.environ["SLURM_CONF"] == slurm_conf
    tmp_path.chmod(0o755)
    submitted = _slurm("sbatch", "--parsable", "-N", "2", "-J", "vigil-it", "-D", str(tmp_path),
                       "-o", "/dev/null", "--wrap", "sleep 60")
    job_id = submitted.split(";")[0]
    _wait_for(f"job {job_id} to run", lambda: _job_state(job_id) == "RUNNING")
    held = expand_hostlist(_slurm("squeue", "-h", "-j", job_id, "-o", "%N"))
    assert len(held) == 2
    job = f"job:slurm-{job_id}"

    # 1. The job runs: three nodes in one partition, the job on exactly its two.
    topo = snapshot_slurm(None, 1000.0)
    assert sorted(topo.entities(EntityKind.NODE)) == ["node:n1", "node:n2", "node:n3"]
    assert list(topo.entities(EntityKind.PARTITION)) == ["partition:debug"]
    for node in ("n1", "n2", "n3"):
        assert topo.neighbors(f"node:{node}", along=frozenset({RelationKind.MEMBER_OF})) == [
            "partition:debug"]
    assert sorted(topo.neighbors(job, along=DEPENDS_ON)) == [f"node:{n}" for n in held]
    entity = topo.entity(job)
    assert entity is not None
    assert dict(entity.attrs) == {
        "slurm.job_id": job_id, "slurm.name": "vigil-it", "slurm.partition": "debug",
        "slurm.user": pwd.getpwuid(os.getuid()).pw_name, "slurm.state": "RUNNING"}
    # 22.05's sinfo/squeue --json describe the same moment as scontrol's text does.
    sinfo = subprocess.run(["sinfo", "--json"], capture_output=True, text=True, timeout=20,
                           check=False)
    if sinfo.returncode == 0:  # sinfo has --json from Slurm 21.08
        from_json = load_slurm(None, sinfo.stdout, _slurm("squeue", "--json"), 1000.0)
        assert _attrs(from_json) == _attrs(topo)
        assert json.loads(sinfo.stdout)["nodes"]

    # 2. One of its nodes is drained: the node stays, with its new state and reason.
    drained = held[0]
    _slurm("scontrol", "update", f"nodename={drained}", "state=drain", "reason=vigil-test")
    snapshot_slurm(topo, 2000.0)
    node = topo.entity(f"node:{drained}")
    assert node is not None and node.valid_from == 1000.0
    assert "DRAIN" in node.attrs["slurm.state"].split(",")
    assert node.attrs["slurm.reason"] == "vigil-test", node.attrs
    assert topo.exists(job)

    # 3. The job is cancelled: gone now, still there before.
    _slurm("scancel", job_id)
    _wait_for(f"job {job_id} to end",
              lambda: _job_state(job_id) not in ("PENDING", "RUNNING", "COMPLETING"))
    snapshot_slurm(topo, 3000.0)
    assert not topo.exists(job)
    assert topo.exists(job, at=2500.0) and not topo.exists(job, at=3000.0)
    assert sorted(topo.neighbors(job, along=DEPENDS_ON, at=2500.0)) == [
        f"node:{n}" for n in held]
    assert sorted(topo.entities(EntityKind.NODE)) == ["node:n1", "node:n2", "node:n3"]


def test_collector_carries_slurm_through_kafka_into_a_live_graph(
        slurm_conf: str, tmp_path: Path) -> None:
    """Real Slurm -> SlurmCollector -> real Kafka (embedded Tansu) -> InventoryStage -> graph:
    a drained node shows in the live graph and as one event on vigil.events."""
    tmp_path.chmod(0o755)
    with EmbeddedBroker(tmp_path / "tansu.log") as broker:
        bus = Bus(broker.bootstrap, KafkaSettings())
        bus.ensure_topics()
        live = LiveTopology()
        stage = InventoryStage(bus, live, save_to=tmp_path / "topology.pickle")
        collector = SlurmCollector(bus, interval_s=0.5)
        events = bus.consumer("test-events", [Topic.EVENTS])
        try:
            stage.start()
            collector.start()
            _wait_for("the graph to hold Slurm's nodes",
                      lambda: live.topo.exists("node:n3"), timeout_s=30)
            _slurm("scontrol", "update", "nodename=n3", "state=drain", "reason=vigil-e2e")
            _wait_for("the drain to reach the graph", lambda: "DRAIN" in (
                live.topo.attr("node:n3", "slurm.state") or ""), timeout_s=30)
            seen: list[str] = []

            def drained_event() -> bool:
                for records in events.poll(timeout_ms=500).values():
                    seen.extend(line.body for r in records for batch in decode_logs(r.value)
                                for line in batch.lines)
                return any("n3" in body and "vigil-e2e" in body for body in seen)

            _wait_for("the drain event", drained_event, timeout_s=30)
        finally:
            collector.shutdown()
            stage.shutdown()
            events.close()
            _slurm("scontrol", "update", "nodename=n3", "state=resume")
            bus.close()
    saved = Topology.load(tmp_path / "topology.pickle")
    assert "DRAIN" in (saved.attr("node:n3", "slurm.state") or "")
