"""The Slurm loader: hostlists, scontrol's text, both JSON shapes, reloads, and scontrol itself."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from vigil.topology.graph import Topology
from vigil.topology.inventory import load_inventory
from vigil.topology.model import EntityKind, RelationKind
from vigil.topology.slurm import (
    SlurmError,
    expand_hostlist,
    jobs_from_json,
    jobs_from_text,
    load_slurm,
    load_slurm_text,
    nodes_from_json,
    nodes_from_text,
    parse_scontrol_text,
    snapshot_slurm,
)

DATA = Path(__file__).parent / "data"
SLURM = DATA / "slurm"
DEPENDS_ON = RelationKind.DEPENDS_ON


def fixture(name: str) -> str:
    return (SLURM / name).read_text()


def graph_of(topo: Topology, at: float | None = None) -> dict[str, dict[str, str]]:
    """Every entity at `at` with its attrs: a whole graph in one comparable value."""
    return {eid: dict(entity.attrs) for eid in topo.entities(at=at)
            if (entity := topo.entity(eid, at)) is not None}


def edges_of(topo: Topology, at: float | None = None) -> set[tuple[str, str, str]]:
    return {(rel.src, str(rel.kind), rel.dst) for eid in topo.entities(at=at)
            for rel in topo.relations(eid, at) if rel.src == eid}


def starts(topo: Topology) -> set[float]:
    """The start times of the live entities."""
    return {entity.valid_from for eid in topo.entities()
            if (entity := topo.entity(eid)) is not None}


def load_2311(topo: Topology | None = None, at: float = 100.0) -> Topology:
    return load_slurm(topo, fixture("scontrol-nodes-23.11.json"),
                      fixture("scontrol-jobs-23.11.json"), at)


# --- hostlists -------------------------------------------------------------------------------
@pytest.mark.parametrize(("hostlist", "names"), [
    ("n1", ["n1"]),
    ("n[1-3,5],gpu-a-[001-003]",
     ["n1", "n2", "n3", "n5", "gpu-a-001", "gpu-a-002", "gpu-a-003"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("n[05]", ["n05"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("rack[1-2]-gpu", ["rack1-gpu", "rack2-gpu"]),
    ("a,b[1-2],c", ["a", "b1", "b2", "c"]),
    ("dgx-h100-[0001-0002].ib", ["dgx-h100-0001.ib", "dgx-h100-0002.ib"]),
    ("", []),
    ("(null)", []),
])
def test_expand_hostlist(hostlist: str, names: list[str]) -> None:
    assert expand_hostlist(hostlist) == names


@pytest.mark.parametrize(("hostlist", "complaint"), [
    ("n[1-", "not names with"),
    ("n1]", "not names with"),
    ("n[[1]]", "not names with"),
    ("n1,,n2", "not names with"),
    (",n1", "not names with"),
    ("n[3-1]", "runs backwards"),
    ("n[a-b]", "is not N or N-M"),
    ("n[1-2:2]", "is not N or N-M"),
    ("n[]", "is not N or N-M"),
    ("n[0-99999999]", "more than"),
    ("a[0-1023]b[0-1023]c[0-1]", "more than"),
])
def test_expand_hostlist_rejects(hostlist: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as info:
        expand_hostlist(hostlist)
    assert repr(hostlist) in str(info.value)


# --- the text dialect ------------------------------------------------------------------------
def test_text_records_of_real_scontrol_show_node() -> None:
    records = parse_scontrol_text(fixture("show-node-22.05.txt"))
    assert [r["NodeName"] for r in records] == ["n1", "n2", "n3"]
    n3 = records[2]
    assert n3["State"] == "IDLE+DRAIN"
    assert n3["OS"] == "Linux 6.18.44-fc-v669 #1 SMP PREEMPT_DYNAMIC @0"  # spaces kept
    assert n3["CfgTRES"] == "cpu=2,mem=1000M,billing=2"  # '=' inside a value
    assert n3["AllocTRES"] == ""
    assert n3["Gres"] == "(null)"
    assert n3["Reason"] == "disk errors; vigil test [root@2026-11-22T02:20:21]"
    assert "Reason" not in records[0]
    assert len(n3) == 39


def test_text_records_of_real_scontrol_show_job() -> None:
    records = parse_scontrol_text(fixture("show-job-22.05.txt"))
    assert [(r["JobId"], r["JobName"], r["JobState"], r["NodeList"]) for r in records] == [
        ("1", "train-a", "RUNNING", "n[1-2]"), ("2", "quick", "COMPLETED", "n3"),
        ("3", "wide", "PENDING", "")]
    assert records[0]["AllocNode:Sid"] == "localhost:5439"  # keys with ':' and '/'
    assert records[0]["CPUs/Task"] == "1"
    assert records[0]["UserId"] == "root(0)"
    assert records[2]["Reason"].startswith("Nodes_required_for_job_are_DOWN,_DRAINED")


@pytest.mark.parametrize("what", ["node", "job"])
def test_oneline_and_multiline_text_give_the_same_records(what: str) -> None:
    assert (parse_scontrol_text(fixture(f"show-{what}-oneline-22.05.txt"))
            == parse_scontrol_text(fixture(f"show-{what}-22.05.txt")))


@pytest.mark.parametrize("text", ["", "No jobs in the system\n", "\n\n   \n"])
def test_text_without_records(text: str) -> None:
    assert parse_scontrol_text(text) == []


def test_text_repeated_key_keeps_the_first() -> None:
    text = "JobId=7 JobName=x\n   Nodes=n1 CPU_IDs=0\n   Nodes=n2 CPU_IDs=1\n"
    assert parse_scontrol_text(text) == [
        {"JobId": "7", "JobName": "x", "Nodes": "n1", "CPU_IDs": "0"}]


def test_text_state_suffixes_become_json_flags() -> None:
    text = ("NodeName=a State=DOWN*+DRAIN Partitions=gpu,debug Reason=Not responding "
            "[slurm@2024-05-01T10:00:00]\n"
            "NodeName=b State=IDLE~ Partitions=(null)\n"
            "NodeName=c State=MIXED+COMPLETING\n")
    nodes = nodes_from_text(text)
    assert [(n.name, n.states, n.partitions, n.reason) for n in nodes] == [
        ("a", ("DOWN", "NOT_RESPONDING", "DRAIN"), ("gpu", "debug"), "Not responding"),
        ("b", ("IDLE", "POWERED_DOWN"), (), ""),
        ("c", ("MIXED", "COMPLETING"), (), ""),
    ]


def test_text_records_without_their_name_are_errors() -> None:
    with pytest.raises(ValueError, match="without NodeName"):
        nodes_from_text("State=IDLE\n")
    with pytest.raises(ValueError, match="without JobId"):
        jobs_from_text("JobName=x\n")


# --- the JSON dialect: node and job records --------------------------------------------------
@pytest.mark.parametrize(("state", "flags", "expected"), [
    (["IDLE", "DRAIN"], None, ("IDLE", "DRAIN")),  # 23.02 and later
    ("idle", ["DRAIN"], ("IDLE", "DRAIN")),  # 22.05 (sinfo --json)
    ("DOWN", [], ("DOWN",)),
    ("mixed", ["DRAIN", "NOT_RESPONDING"], ("MIXED", "DRAIN", "NOT_RESPONDING")),
    ([], None, ("UNKNOWN",)),
])
def test_json_node_state_forms(state: object, flags: object, expected: tuple[str, ...]) -> None:
    node: dict[str, object] = {"name": "n1", "state": state}
    if flags is not None:
        node["state_flags"] = flags
    assert nodes_from_json(json.dumps({"nodes": [node]}))[0].states == expected


@pytest.mark.parametrize(("state", "expected"), [
    (["RUNNING"], ("RUNNING",)), ("RUNNING", ("RUNNING",)), (["COMPLETING"], ("COMPLETING",)),
    ("completed", ("COMPLETED",)), (["RUNNING", "COMPLETING"], ("RUNNING", "COMPLETING")),
])
def test_json_job_state_forms(state: object, expected: tuple[str, ...]) -> None:
    job = {"job_id": 9, "job_state": state, "nodes": "n[1-2]"}
    (parsed,) = jobs_from_json(json.dumps({"jobs": [job]}))
    assert parsed.states == expected
    assert parsed.nodes == ("n1", "n2")


def test_json_numbers_wrapped_as_newer_data_parsers_do() -> None:
    node = {"name": "n1", "state": ["IDLE"], "cpus": {"set": True, "infinite": False,
                                                      "number": 64},
            "real_memory": {"set": False, "infinite": False, "number": 0}}
    (parsed,) = nodes_from_json(json.dumps({"nodes": [node]}))
    assert (parsed.cpus, parsed.real_memory) == ("64", "")


@pytest.mark.parametrize(("text", "complaint"), [
    ("not json", "does not parse"),
    ("[]", "no list of 'nodes'"),
    ('{"nodes": {"n1": {}}}', "no list of 'nodes'"),
    ('{"errors": [{"error": "Invalid user"}]}', "Invalid user"),
    ('{"nodes": [{"state": "idle"}]}', "without a name"),
])
def test_json_that_is_not_slurms(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        load_slurm(None, text, '{"jobs": []}', 1.0)


# --- into the graph --------------------------------------------------------------------------
def test_load_scontrol_json_2311() -> None:
    topo = load_2311()
    drained = {"host.name": "gpu-a-003", "slurm.node": "gpu-a-003", "slurm.state": "IDLE,DRAIN",
               "slurm.reason": "Xid 79: GPU fell off the bus", "slurm.cpus": "112",
               "slurm.real_memory": "2060000", "slurm.gres": "gpu:h100:8(S:0-1)",
               "slurm.hostname": "gpu-a-003-bmc"}
    assert graph_of(topo) == {
        "partition:gpu": {"slurm.partition": "gpu"},
        "partition:debug": {"slurm.partition": "debug"},
        "node:gpu-a-001": {"host.name": "gpu-a-001", "slurm.node": "gpu-a-001",
                           "slurm.state": "MIXED", "slurm.cpus": "112",
                           "slurm.real_memory": "2060000", "slurm.gres": "gpu:h100:8(S:0-1)"},
        "node:gpu-a-002": {"host.name": "gpu-a-002", "slurm.node": "gpu-a-002",
                           "slurm.state": "ALLOCATED", "slurm.cpus": "112",
                           "slurm.real_memory": "2060000", "slurm.gres": "gpu:h100:8(S:0-1)"},
        "node:gpu-a-003": drained,  # drained nodes stay: diagnosis needs them
        "job:slurm-4242": {"slurm.job_id": "4242", "slurm.name": "llm-8b-run1",
                           "slurm.user": "alice", "slurm.partition": "gpu",
                           "slurm.state": "RUNNING"},
    }  # the pending job 4243 and the completed 4240 hold no nodes: not in the graph
    assert edges_of(topo) == {
        ("node:gpu-a-001", "member_of", "partition:gpu"),
        ("node:gpu-a-001", "member_of", "partition:debug"),
        ("node:gpu-a-002", "member_of", "partition:gpu"),
        ("node:gpu-a-002", "member_of", "partition:debug"),
        ("node:gpu-a-003", "member_of", "partition:gpu"),
        ("job:slurm-4242", "depends_on", "node:gpu-a-001"),
        ("job:slurm-4242", "depends_on", "node:gpu-a-002"),
    }
    assert topo.index("host.name", "gpu-a-003") == "node:gpu-a-003"
    assert starts(topo) == {100.0}


def test_load_real_2205_json() -> None:
    topo = load_slurm(None, fixture("sinfo-22.05.json"), fixture("squeue-22.05.json"), 5.0)
    node = {"host.name": "n1", "slurm.node": "n1", "slurm.state": "MIXED", "slurm.cpus": "2",
            "slurm.real_memory": "1000", "slurm.hostname": "vm"}
    assert graph_of(topo) == {
        "partition:debug": {"slurm.partition": "debug"},
        "node:n1": node,
        "node:n2": node | {"host.name": "n2", "slurm.node": "n2"},
        "node:n3": node | {"host.name": "n3", "slurm.node": "n3", "slurm.state": "IDLE,DRAIN",
                           "slurm.reason": "disk errors; vigil test"},
        "job:slurm-1": {"slurm.job_id": "1", "slurm.name": "train-a", "slurm.user": "root",
                        "slurm.partition": "debug", "slurm.state": "RUNNING"},
    }
    assert edges_of(topo) == {
        ("node:n1", "member_of", "partition:debug"), ("node:n2", "member_of", "partition:debug"),
        ("node:n3", "member_of", "partition:debug"),
        ("job:slurm-1", "depends_on", "node:n1"), ("job:slurm-1", "depends_on", "node:n2"),
    }


@pytest.mark.parametrize("form", ["", "oneline-"])
def test_text_and_json_of_one_moment_give_one_graph(form: str) -> None:
    from_json = load_slurm(None, fixture("sinfo-22.05.json"), fixture("squeue-22.05.json"), 5.0)
    from_text = load_slurm_text(None, fixture(f"show-node-{form}22.05.txt"),
                                fixture(f"show-job-{form}22.05.txt"), 5.0)
    assert graph_of(from_text) == graph_of(from_json)
    assert edges_of(from_text) == edges_of(from_json)


def test_a_failing_node_impacts_its_jobs_not_its_partition() -> None:
    from vigil.topology.queries import blast_radius

    topo = load_2311()
    hit = set(blast_radius(topo, "node:gpu-a-001"))
    assert "job:slurm-4242" in hit
    assert "node:gpu-a-002" not in hit  # the job is not a path between its nodes


def test_job_on_a_node_slurm_did_not_list_is_related_to_the_rest() -> None:
    nodes = json.dumps({"nodes": [{"name": "n1", "state": "idle", "partitions": ["p"]}]})
    jobs = json.dumps({"jobs": [{"job_id": 5, "job_state": "RUNNING", "nodes": "n[1-2]"}]})
    topo = load_slurm(None, nodes, jobs, 1.0)
    assert edges_of(topo) == {("node:n1", "member_of", "partition:p"),
                              ("job:slurm-5", "depends_on", "node:n1")}
    assert "node:n2" not in topo


# --- loading again ---------------------------------------------------------------------------
def _edit(name: str, key: str, change: Mapping[str, Mapping[str, object] | None]) -> str:
    """The fixture with records (nodes by name, jobs by job_id) changed, or dropped at None."""
    doc = json.loads(fixture(name))
    items = []
    for item in doc[key]:
        ident = str(item["name" if key == "nodes" else "job_id"])
        if ident in change:
            edit = change[ident]
            if edit is None:
                continue
            item = {**item, **edit}
        items.append(item)
    doc[key] = items
    return json.dumps(doc)


def test_reload_updates_retires_and_keeps_history() -> None:
    topo = load_2311(at=100.0)
    nodes = _edit("scontrol-nodes-23.11.json", "nodes", {
        "gpu-a-002": {"state": ["MIXED", "DRAIN"], "reason": "NHC: nvidia-smi failed"},
        "gpu-a-003": None,  # taken out of slurm.conf
    })
    jobs = _edit("scontrol-jobs-23.11.json", "jobs", {"4242": {"job_state": ["COMPLETED"]}})
    load_slurm(topo, nodes, jobs, 200.0)

    node = topo.entity("node:gpu-a-002")
    assert node is not None and node.valid_from == 100.0  # same lifetime, new attrs
    assert node.attrs["slurm.state"] == "MIXED,DRAIN"
    assert node.attrs["slurm.reason"] == "NHC: nvidia-smi failed"

    job = "job:slurm-4242"
    assert not topo.exists(job)
    assert topo.exists(job, at=150.0) and not topo.exists(job, at=200.0)
    ended = topo.entity(job, at=150.0)
    assert ended is not None and ended.valid_to == 200.0
    assert topo.neighbors(job, along=frozenset({DEPENDS_ON}), at=150.0) == [
        "node:gpu-a-001", "node:gpu-a-002"]
    assert topo.neighbors(job, along=frozenset({DEPENDS_ON}), at=250.0) == []

    assert not topo.exists("node:gpu-a-003") and topo.exists("node:gpu-a-003", at=199.0)
    assert topo.exists("partition:gpu")  # still has gpu-a-001 and gpu-a-002
    assert edges_of(topo) == {
        ("node:gpu-a-001", "member_of", "partition:gpu"),
        ("node:gpu-a-001", "member_of", "partition:debug"),
        ("node:gpu-a-002", "member_of", "partition:gpu"),
        ("node:gpu-a-002", "member_of", "partition:debug"),
    }


def test_reload_moves_nodes_between_partitions_and_retires_empty_ones() -> None:
    topo = load_2311(at=100.0)
    no_debug = {"partitions": ["gpu"]}
    nodes = _edit("scontrol-nodes-23.11.json", "nodes",
                  {"gpu-a-001": no_debug, "gpu-a-002": no_debug})
    load_slurm(topo, nodes, fixture("scontrol-jobs-23.11.json"), 200.0)
    assert not topo.exists("partition:debug") and topo.exists("partition:debug", at=150.0)
    assert ("node:gpu-a-001", "member_of", "partition:debug") in edges_of(topo, at=150.0)
    assert {dst for _, kind, dst in edges_of(topo) if kind == "member_of"} == {"partition:gpu"}


def test_reload_of_the_same_snapshot_changes_nothing() -> None:
    topo = load_2311(at=100.0)
    before, edges = graph_of(topo), edges_of(topo)
    load_2311(topo, at=300.0)
    assert graph_of(topo) == before and edges_of(topo) == edges
    assert starts(topo) == {100.0}


def test_a_requeued_job_starts_a_new_lifetime() -> None:
    topo = load_2311(at=100.0)
    load_slurm(topo, fixture("scontrol-nodes-23.11.json"), '{"jobs": []}', 200.0)
    load_2311(topo, at=300.0)
    job = topo.entity("job:slurm-4242")
    assert job is not None and job.valid_from == 300.0


def test_slurm_corrects_an_inventory_and_leaves_the_rest_of_it() -> None:
    topo = load_inventory(DATA / "inventory" / "small.yaml", at=0.0)
    load_2311(topo, at=100.0)
    node = topo.entity("node:gpu-a-001")
    assert node is not None and node.valid_from == 0.0
    assert node.attrs["host.name"] == "gpu-a-001" and node.attrs["slurm.state"] == "MIXED"
    assert topo.exists("gpu:gpu-a-001/0")
    assert ("node:gpu-a-001", "contains", "gpu:gpu-a-001/0") in edges_of(topo)
    # Slurm does not know gpu-b-001: it was never Slurm's to retire, nor its partition.
    load_slurm(topo, fixture("scontrol-nodes-23.11.json"), '{"jobs": []}', 200.0)
    assert topo.exists("node:gpu-b-001") and topo.exists("partition:debug")
    assert ("node:gpu-b-001", "member_of", "partition:debug") in edges_of(topo)
    # ...but it knows the inventory's nodes, and drops them when it drops them.
    nodes = _edit("scontrol-nodes-23.11.json", "nodes", {"gpu-a-001": None})
    load_slurm(topo, nodes, '{"jobs": []}', 300.0)
    assert not topo.exists("node:gpu-a-001")


# --- scontrol itself -------------------------------------------------------------------------
FAKE_SCONTROL = '''\
import os, sys, time
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_SCONTROL_LOG"], "a") as log:
    log.write(repr(args) + "\\n")
mode = os.environ["FAKE_SCONTROL_MODE"]
data = Path(os.environ["FAKE_SCONTROL_DATA"])
what = "node" if "node" in args else "job"
if mode == "sleep":
    time.sleep(30)
if mode == "fail":
    sys.exit("scontrol: error: Unable to contact slurm controller (connect failure)")
if mode == "json":
    sys.stdout.write((data / f"scontrol-{what}s-23.11.json").read_text())
elif mode == "garbage":
    sys.stdout.write("<html>not slurm</html>")
elif "--json" in args:
    sys.exit("scontrol: unrecognized option '--json'\\nTry \\"scontrol --help\\" for more")
else:
    sys.stdout.write((data / f"show-{what}-oneline-22.05.txt").read_text())
'''


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An executable that answers like scontrol from the fixtures; FAKE_SCONTROL_MODE picks
    how (json: Slurm 23.11; text: 22.05, which rejects --json; fail; sleep; garbage)."""
    script = tmp_path / "scontrol"
    script.write_text(f"#!{sys.executable}\n{FAKE_SCONTROL}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_SCONTROL_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAKE_SCONTROL_DATA", str(SLURM))
    return script


def calls(fake: Path) -> list[str]:
    return (fake.parent / "calls.log").read_text().splitlines()


def test_snapshot_with_json(fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SCONTROL_MODE", "json")
    topo = snapshot_slurm(None, 100.0, scontrol=str(fake_scontrol))
    assert graph_of(topo) == graph_of(load_2311())
    assert calls(fake_scontrol) == ["['--all', 'show', 'node', '--json']",
                                    "['--all', 'show', 'job', '--json']"]


def test_snapshot_falls_back_to_text(fake_scontrol: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SCONTROL_MODE", "text")
    topo = snapshot_slurm(None, 5.0, scontrol=str(fake_scontrol))
    assert sorted(topo.entities(EntityKind.NODE)) == ["node:n1", "node:n2", "node:n3"]
    assert topo.neighbors("job:slurm-1", along=frozenset({DEPENDS_ON})) == ["node:n1", "node:n2"]
    assert calls(fake_scontrol) == ["['--all', 'show', 'node', '--json']",
                                    "['--all', '--oneliner', 'show', 'node']",
                                    "['--all', '--oneliner', 'show', 'job']"]


def test_snapshot_found_on_path(fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SCONTROL_MODE", "json")
    monkeypatch.setenv("PATH", f"{fake_scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    assert len(snapshot_slurm(Topology(), 1.0)) == 6


@pytest.mark.parametrize(("mode", "complaint"), [
    ("fail", "exited 1: scontrol: error: Unable to contact slurm controller"),
    ("garbage", "printed no node and job list"),
    ("sleep", "took longer than 0.5 s"),
])
def test_snapshot_errors(fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                         complaint: str) -> None:
    monkeypatch.setenv("FAKE_SCONTROL_MODE", mode)
    with pytest.raises(SlurmError, match=complaint):
        snapshot_slurm(None, 1.0, scontrol=str(fake_scontrol), timeout_s=0.5)


def test_snapshot_without_scontrol(tmp_path: Path) -> None:
    with pytest.raises(SlurmError, match="not found"):
        snapshot_slurm(None, 1.0, scontrol=str(tmp_path / "no-such-scontrol"))

