"""Loading what Slurm knows (its nodes, their partitions and states, running jobs) into the graph.

Two dialects are read into one pair of records: JSON (``scontrol show node|job --json`` from
Slurm 23.02, or the same keys from 22.05's ``sinfo --json`` / ``squeue --json``; states are
lists or strings by version) and text (``scontrol show node|job``, ``Key=value`` blocks or one
record a line with ``-o``), which `snapshot_slurm` uses where scontrol has no ``--json``.

The graph, in inventory_build's ids: ``node:<NodeName>`` (attrs ``host.name``, ``slurm.*``)
member_of ``partition:<name>``; a running or completing job is ``job:slurm-<id>`` and
depends_on each node it holds, so a failing node impacts its jobs. Jobs are not related to
partitions: every node of a partition would then impact every job in it. Loading again later
corrects the graph: what Slurm no longer lists is retired then, new states replace the
``slurm.*`` attrs (other sources' attrs stay). Only entities carrying ``slurm.*`` attrs are
retired: a load is an inventory snapshot of source ``slurm`` (see `vigil.topology.changes`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from vigil.topology.changes import EntityRecord, InventorySnapshot, apply_snapshot
from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, Relation, RelationKind, entity_id

ACTIVE_JOB_STATES: Final = frozenset({"RUNNING", "COMPLETING"})
NODE_MARK: Final = "slurm.node"
JOB_MARK: Final = "slurm.job_id"
PARTITION_MARK: Final = "slurm.partition"
_KINDS: Final = frozenset({EntityKind.NODE, EntityKind.JOB, EntityKind.PARTITION})
_MANAGES: Final = frozenset({(RelationKind.MEMBER_OF, EntityKind.PARTITION),
                             (RelationKind.DEPENDS_ON, EntityKind.NODE)})
DEFAULT_TIMEOUT_S: Final = 30.0
MAX_HOSTLIST: Final = 1 << 20  # names one hostlist may expand to: a typo must not eat memory

_NULL: Final = frozenset({"", "(null)", "N/A", "None"})
# Keys in scontrol's text are CamelCase, some with ':' or '/' (AllocNode:Sid, CPUs/Task); a
# key starts after whitespace, so "CfgTRES=cpu=2,mem=1000M" is one pair.
_TEXT_KEY: Final = re.compile(r"(?:^|(?<=\s))([A-Z][A-Za-z0-9_:/]*)=")
_REASON_STAMP: Final = re.compile(r"\s*\[[^\]\[]*@[^\]\[]*\]$")  # " [root@2024-05-01T10:00:00]"
_RANGE: Final = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_HOST_ITEM: Final = re.compile(r"(?:[^,\[\]]|\[[^\[\]]*\])+")  # a name; its brackets hold ranges
_HOSTLIST: Final = re.compile(rf"{_HOST_ITEM.pattern}(?:,{_HOST_ITEM.pattern})*")
# Suffixes scontrol's text appends to a base state, spelled as the JSON flags they stand for.
_STATE_SUFFIXES: Final[Mapping[str, str]] = {
    "*": "NOT_RESPONDING", "~": "POWERED_DOWN", "#": "POWERING_UP", "%": "POWERING_DOWN",
    "!": "POWER_DOWN", "@": "REBOOT_REQUESTED", "^": "REBOOT_ISSUED", "$": "MAINTENANCE"}


class SlurmError(RuntimeError):
    """scontrol is missing, failed, timed out, or printed something that is not Slurm's."""


class _JsonUnsupported(SlurmError):
    """This scontrol has no --json (Slurm before 23.02)."""


@dataclass(frozen=True, slots=True)
class SlurmNode:
    """One node as Slurm reports it, from either dialect."""

    name: str
    hostname: str
    partitions: tuple[str, ...]
    states: tuple[str, ...]
    reason: str = ""
    cpus: str = ""
    real_memory: str = ""  # megabytes, as slurm.conf's RealMemory
    gres: str = ""

    def attrs(self) -> dict[str, str]:
        """The node's attributes in the graph; empty values are left out."""
        return _non_empty({
            "host.name": self.name, NODE_MARK: self.name, "slurm.state": ",".join(self.states),
            "slurm.reason": self.reason, "slurm.cpus": self.cpus,
            "slurm.real_memory": self.real_memory, "slurm.gres": self.gres,
            "slurm.hostname": self.hostname if self.hostname != self.name else ""})


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One job as Slurm reports it, from either dialect; `nodes` is its expanded NodeList."""

    job_id: str
    name: str
    user: str
    partition: str
    states: tuple[str, ...]
    nodes: tuple[str, ...]

    def attrs(self) -> dict[str, str]:
        """The job's attributes in the graph; empty values are left out."""
        return _non_empty({JOB_MARK: self.job_id, "slurm.name": self.name,
                           "slurm.user": self.user, "slurm.partition": self.partition,
                           "slurm.state": ",".join(self.states)})


def _non_empty(attrs: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in attrs.items() if value}


# --- hostlists -------------------------------------------------------------------------------
def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host names, expanded in order, zero padding kept:
    ``"n[1-3,5],gpu-a-[001-002]"`` -> n1 n2 n3 n5 gpu-a-001 gpu-a-002. Several brackets in
    one name multiply (``r[1-2]n[1-2]``). ValueError naming the list if it is malformed."""
    text = hostlist.strip()
    if text in _NULL:
        return []
    if _HOSTLIST.fullmatch(text) is None:
        raise ValueError(f"hostlist {hostlist!r}: not names with [ranges] separated by commas")
    names: list[str] = []
    for item in _HOST_ITEM.findall(text):
        expanded = [""]
        # re.split with a group alternates: literal, ranges, literal, ..., literal.
        for i, piece in enumerate(re.split(r"\[([^\]]*)\]", item)):
            choices = [piece] if i % 2 == 0 else _expand_ranges(piece, hostlist)
            if len(names) + len(expanded) * len(choices) > MAX_HOSTLIST:
                raise ValueError(f"hostlist {hostlist!r}: more than {MAX_HOSTLIST} names")
            expanded = [name + choice for name in expanded for choice in choices]
        names += expanded
    return names


def _expand_ranges(spec: str, whole: str) -> list[str]:
    out: list[str] = []
    for part in spec.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"hostlist {whole!r}: {part!r} is not N or N-M")
        low = match.group(1)
        start, end = int(low), int(match.group(2) or low)
        if end < start:
            raise ValueError(f"hostlist {whole!r}: range {part!r} runs backwards")
        if end - start >= MAX_HOSTLIST:
            raise ValueError(f"hostlist {whole!r}: more than {MAX_HOSTLIST} names")
        width = len(low)  # Slurm pads a range to the width of its first number
        out += [f"{number:0{width}d}" for number in range(start, end + 1)]
    return out


# --- the text dialect ------------------------------------------------------------------------
def parse_scontrol_text(text: str) -> list[dict[str, str]]:
    """The records of ``scontrol show node|job`` text, multi-line or ``-o``, as key -> value.

    A record starts at an unindented line and runs over the indented lines after it. Values
    keep their spaces (``OS=Linux 6.1 #1 SMP``) and end where the next ``Key=`` starts; a
    repeated key keeps its first value. Slurm's text is ambiguous where free text (a Reason)
    holds `` Word=``: the JSON dialect is not."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if (not line.strip() or not line[0].isspace()) and current:
            records.append(current)
            current = {}
        keys = list(_TEXT_KEY.finditer(line))
        for i, key in enumerate(keys):
            end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
            current.setdefault(key.group(1), line[key.end():end].strip())
    if current:
        records.append(current)
    return records


def nodes_from_text(text: str) -> list[SlurmNode]:
    """Nodes from the text of ``scontrol show node`` (with or without ``-o``)."""
    nodes: list[SlurmNode] = []
    for record in parse_scontrol_text(text):
        name = record.get("NodeName", "")
        if name in _NULL:
            raise ValueError(f"scontrol node record without NodeName: {dict(record)!r}")
        states: list[str] = []
        for part in record.get("State", "UNKNOWN").split("+"):
            base = part.rstrip("".join(_STATE_SUFFIXES))
            states += [base.upper(), *(_STATE_SUFFIXES[c] for c in part[len(base):])]
        nodes.append(SlurmNode(
            name=name, hostname=_text_value(record, "NodeHostName") or name,
            partitions=_split_names(_text_value(record, "Partitions")),
            states=_unique(states), reason=_REASON_STAMP.sub("", _text_value(record, "Reason")),
            cpus=_text_value(record, "CPUTot"), real_memory=_text_value(record, "RealMemory"),
            gres=_text_value(record, "Gres")))
    return nodes


def jobs_from_text(text: str) -> list[SlurmJob]:
    """Jobs from the text of ``scontrol show job`` (with or without ``-o``)."""
    jobs: list[SlurmJob] = []
    for record in parse_scontrol_text(text):
        job_id = record.get("JobId", "")
        if job_id in _NULL:
            raise ValueError(f"scontrol job record without JobId: {dict(record)!r}")
        jobs.append(SlurmJob(
            job_id=job_id, name=_text_value(record, "JobName"),
            user=_text_value(record, "UserId").partition("(")[0],  # "alice(1001)"
            partition=_text_value(record, "Partition"),
            states=_unique([record.get("JobState", "UNKNOWN").upper()]),
            nodes=tuple(expand_hostlist(record.get("NodeList", "")))))
    return jobs


def _text_value(record: Mapping[str, str], key: str) -> str:
    value = record.get(key, "")
    return "" if value in _NULL else value


# --- the JSON dialect ------------------------------------------------------------------------
def nodes_from_json(text: str) -> list[SlurmNode]:
    """Nodes from ``scontrol show node --json`` (or ``sinfo --json``); ValueError if malformed."""
    nodes: list[SlurmNode] = []
    for item in _json_items(text, "nodes"):
        name = _json_text(item.get("name"))
        if not name:
            raise ValueError(f"Slurm node without a name: {item!r}")
        states = [*_json_list(item.get("state")), *_json_list(item.get("state_flags"))]
        nodes.append(SlurmNode(
            name=name, hostname=_json_text(item.get("hostname")) or name,
            partitions=tuple(_json_list(item.get("partitions"))),
            states=_unique([state.upper() for state in states] or ["UNKNOWN"]),
            reason=_json_text(item.get("reason")), cpus=_json_text(item.get("cpus")),
            real_memory=_json_text(item.get("real_memory")), gres=_json_text(item.get("gres"))))
    return nodes


def jobs_from_json(text: str) -> list[SlurmJob]:
    """Jobs from ``scontrol show job --json`` (or ``squeue --json``); ValueError if malformed."""
    jobs: list[SlurmJob] = []
    for item in _json_items(text, "jobs"):
        job_id = _json_text(item.get("job_id"))
        if not job_id:
            raise ValueError(f"Slurm job without a job_id: {item!r}")
        states = [state.upper() for state in _json_list(item.get("job_state"))]
        jobs.append(SlurmJob(
            job_id=job_id, name=_json_text(item.get("name")),
            user=_json_text(item.get("user_name")), partition=_json_text(item.get("partition")),
            states=_unique(states or ["UNKNOWN"]),
            nodes=tuple(expand_hostlist(_json_text(item.get("nodes"))))))
    return jobs


def _json_items(text: str, key: str) -> list[Mapping[str, object]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Slurm {key} JSON does not parse: {exc}") from None
    items = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        errors = (doc.get("errors") if isinstance(doc, dict) else None) or "none reported"
        raise ValueError(f"Slurm JSON has no list of {key!r} objects (errors: {errors})")
    return items


def _json_text(value: object) -> str:
    """A scalar as text; newer data parsers wrap numbers as {"set", "infinite", "number"}."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return ""
        value = value.get("number")
    if value is None or isinstance(value, (dict, list)):
        return ""
    text = str(value)
    return "" if text in _NULL else text


def _json_list(value: object) -> list[str]:
    if isinstance(value, list):
        return [text for text in map(_json_text, value) if text]
    return list(_split_names(_json_text(value)))


def _split_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip() not in _NULL)


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in values if value))


# --- into the graph --------------------------------------------------------------------------
def load_slurm(topo: Topology | None, nodes_json: str, jobs_json: str, at: float) -> Topology:
    """Add (or correct) what the JSON of ``scontrol show node`` and ``show job`` describes, at
    `at`, in `topo` (a new Topology if None) and return it; ValueError if the JSON is not
    Slurm's. `at` must not precede the previous load of the same graph."""
    return apply_slurm(topo, nodes_from_json(nodes_json), jobs_from_json(jobs_json), at)


def load_slurm_text(topo: Topology | None, nodes_text: str, jobs_text: str,
                    at: float) -> Topology:
    """As `load_slurm`, from the text of ``scontrol show node`` and ``show job``."""
    return apply_slurm(topo, nodes_from_text(nodes_text), jobs_from_text(jobs_text), at)


def apply_slurm(topo: Topology | None, nodes: Sequence[SlurmNode], jobs: Sequence[SlurmJob],
                at: float) -> Topology:
    """Make `topo` agree with one snapshot of Slurm at `at` (see the module docstring)."""
    topo = Topology() if topo is None else topo
    apply_snapshot(topo, slurm_snapshot(nodes, jobs, at))
    return topo


def slurm_snapshot(nodes: Sequence[SlurmNode], jobs: Sequence[SlurmJob],
                   at: float) -> InventorySnapshot:
    """What Slurm says exists at `at`, as the inventory snapshot the collector publishes."""
    records: dict[str, EntityRecord] = {}
    relations: list[Relation] = []
    for node in nodes:
        node_id = entity_id(EntityKind.NODE, node.name)
        records[node_id] = EntityRecord(node_id, node.attrs())
        for name in node.partitions:
            partition = entity_id(EntityKind.PARTITION, name)
            records.setdefault(partition, EntityRecord(partition, {PARTITION_MARK: name}))
            relations.append(Relation(node_id, RelationKind.MEMBER_OF, partition))
    for job in jobs:
        if ACTIVE_JOB_STATES.isdisjoint(job.states):  # holds no node any more, or not yet
            continue
        job_id = entity_id(EntityKind.JOB, f"slurm-{job.job_id}")
        records[job_id] = EntityRecord(job_id, job.attrs())
        # A node missing from Slurm's node list is skipped, not invented.
        relations += [Relation(job_id, RelationKind.DEPENDS_ON, held)
                      for name in _unique(job.nodes)
                      if (held := entity_id(EntityKind.NODE, name)) in records]
    return InventorySnapshot(
        source="slurm", at=at, kinds=_KINDS, entities=tuple(records.values()),
        relations=tuple(relations), manages=_MANAGES)


# --- from a live cluster ---------------------------------------------------------------------
def snapshot_slurm(topo: Topology | None, at: float, scontrol: str = "scontrol",
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> Topology:
    """Ask scontrol for nodes and jobs now (`read_slurm`) and `apply_slurm` them at `at`."""
    nodes, jobs = read_slurm(scontrol, timeout_s)
    return apply_slurm(topo, nodes, jobs, at)


def read_slurm(scontrol: str = "scontrol", timeout_s: float = DEFAULT_TIMEOUT_S,
               ) -> tuple[list[SlurmNode], list[SlurmJob]]:
    """Nodes and jobs as scontrol reports them now. Uses ``--json``, or the text form where
    scontrol has no ``--json`` (Slurm 22.05). scontrol runs with an argument list, never
    through a shell; SlurmError if it is missing, fails, takes longer than `timeout_s` or
    prints what Slurm would not. The cluster is scontrol's usual one (``SLURM_CONF`` in the
    environment)."""
    binary = shutil.which(scontrol)
    if binary is None:
        raise SlurmError(f"{scontrol!r} not found (is PATH right? Debian: apt-get install "
                         "slurm-client)")
    try:
        nodes_out = _scontrol(binary, ["show", "node", "--json"], timeout_s)
        readers = nodes_from_json, jobs_from_json
        jobs_out = _scontrol(binary, ["show", "job", "--json"], timeout_s)
    except _JsonUnsupported:
        nodes_out = _scontrol(binary, ["--oneliner", "show", "node"], timeout_s)
        readers = nodes_from_text, jobs_from_text
        jobs_out = _scontrol(binary, ["--oneliner", "show", "job"], timeout_s)
    try:
        return readers[0](nodes_out), readers[1](jobs_out)
    except ValueError as exc:
        raise SlurmError(f"{binary} printed no node and job list Slurm's way: {exc}") from exc


def _scontrol(binary: str, args: list[str], timeout_s: float) -> str:
    command = [binary, "--all", *args]  # --all: nodes and jobs of hidden partitions too
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(command)} took longer than {timeout_s} s") from None
    except OSError as exc:
        raise SlurmError(f"cannot run {binary}: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.strip() or done.stdout.strip() or "no output"
        if "--json" in args and ("unrecognized option" in message
                                 or "invalid option" in message):
            raise _JsonUnsupported(message)
        raise SlurmError(f"{' '.join(command)} exited {done.returncode}: {message}")
    return done.stdout
