"""Slurm as a source: its inventory (nodes, partitions, jobs) and its state changes as events.

Every interval it asks scontrol once (`vigil.topology.slurm.read_slurm`), publishes the whole
picture as an inventory snapshot on ``vigil.inventory`` (key ``slurm``), and publishes what
changed since the last poll as events on ``vigil.events``: a node whose state changed (to
DOWN, DRAIN, NOT_RESPONDING, back to IDLE) and a job whose state changed (to FAILED,
NODE_FAIL, TIMEOUT, ...). A node or job it sees for the first time (its first poll, a job that
started and failed between polls) is reported only if it is already unhealthy.
"""

from __future__ import annotations

import logging
from typing import Final

from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.events import NORMAL, WARNING, ClusterEvent, publish_events
from vigil.topology.changes import encode_snapshot
from vigil.topology.slurm import (
    DEFAULT_TIMEOUT_S,
    SlurmError,
    SlurmJob,
    SlurmNode,
    read_slurm,
    slurm_snapshot,
)

from vigil.bus import Topic

log = logging.getLogger(__name__)

# Node state words (base state or flag) that mean it cannot run work as it should.
UNHEALTHY_NODE: Final = frozenset({"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING",
                                   "NOT_RESPONDING", "INVALID_REG", "REBOOT_REQUESTED"})
# Job states that end a job for a reason a fault may explain.
FAILED_JOB: Final = frozenset({"FAILED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL",
                               "DEADLINE", "PREEMPTED"})


class SlurmCollector(PollingCollector):
    def __init__(self, publisher: Publisher, interval_s: float, scontrol: str = "scontrol",
                 timeout_s: float = DEFAULT_TIMEOUT_S, name: str = "slurm") -> None:
        super().__init__(name, interval_s)
        self.publisher = publisher
        self.scontrol = scontrol
        self.timeout_s = timeout_s
        self._nodes: dict[str, tuple[str, ...]] = {}  # state words at the last poll
        self._jobs: dict[str, tuple[str, ...]] = {}
        self._failing = False

    def collect(self, now: float) -> None:
        try:
            nodes, jobs = read_slurm(self.scontrol, self.timeout_s)
        except SlurmError as exc:
            self.counters.add_errored()
            if not self._failing:  # say it once, not every interval
                log.warning("slurm unreachable", extra={"error": str(exc)})
                self._failing = True
            return
        if self._failing:
            log.info("slurm reachable again")
            self._failing = False
        self.counters.add_received(len(nodes) + len(jobs))
        snapshot = slurm_snapshot(nodes, jobs, now)
        self.publisher.publish(Topic.INVENTORY, encode_snapshot(snapshot), key="slurm")
        events = self._node_events(nodes, now) + self._job_events(jobs, now)
        self.counters.add_sent(1 + publish_events(self.publisher, events))

    def _node_events(self, nodes: list[SlurmNode], now: float) -> list[ClusterEvent]:
        before, self._nodes = self._nodes, {node.name: node.states for node in nodes}
        events = []
        for node in nodes:
            old = before.get(node.name)
            unhealthy = not UNHEALTHY_NODE.isdisjoint(node.states)
            if not _changed(old, node.states, unhealthy):
                continue
            state, previous, change = _transition(old, node.states)
            reason = f": {node.reason}" if node.reason else ""
            events.append(ClusterEvent(
                name="slurm.node.state", entity=f"node:{node.name}", key=node.name,
                host=node.name, time=now, severity=WARNING if unhealthy else NORMAL,
                body=f"Slurm node {node.name} {change}{reason}",
                attributes={"slurm.node.name": node.name, "slurm.state": state,
                            "slurm.state.previous": previous, "slurm.reason": node.reason}))
        return events

    def _job_events(self, jobs: list[SlurmJob], now: float) -> list[ClusterEvent]:
        before, self._jobs = self._jobs, {job.job_id: job.states for job in jobs}
        events = []
        for job in jobs:
            old = before.get(job.job_id)
            failed = not FAILED_JOB.isdisjoint(job.states)
            if not _changed(old, job.states, failed):
                continue
            state, previous, change = _transition(old, job.states)
            events.append(ClusterEvent(
                name="slurm.job.state", entity=f"job:slurm-{job.job_id}",
                key=f"slurm-{job.job_id}", time=now,
                severity=WARNING if failed else NORMAL,
                body=f"Slurm job {job.job_id} ({job.name}) {change}",
                attributes={"slurm.job.id": job.job_id, "slurm.job.name": job.name,
                            "slurm.state": state, "slurm.state.previous": previous,
                            "slurm.nodes": ",".join(job.nodes)}))
        return events


def _transition(old: tuple[str, ...] | None, new: tuple[str, ...]) -> tuple[str, str, str]:
    """The new state, the previous one ("" at first sight) and the change in words."""
    state, previous = ",".join(new), ",".join(old or ())
    return state, previous, f"{previous} -> {state}" if previous else f"is {state}"


def _changed(old: tuple[str, ...] | None, new: tuple[str, ...], bad: bool) -> bool:
    """Whether a state is news: it changed since the last poll, or it is the first we see
    of this node or job (first poll, new node, a job that ended between polls) and bad."""
    return old != new if old is not None else bad
