"""Polls the Kubernetes API for what the scheduler knows: the inventory, its Events, and the
changes between two polls that Kubernetes records nowhere else.

Every interval the collector lists nodes, pods and events (all pages) and publishes

- the inventory snapshot of source ``k8s`` (`vigil.topology.kubernetes`) on
  ``vigil.inventory``, key ``k8s``: when it differs from the last one sent, and every
  `resend_s` anyway, so a consumer that lost one heals with the next;
- on ``vigil.events``, OTLP log records with OpenTelemetry's ``event.name``: each Kubernetes
  Event once per resourceVersion (``k8s.event``), and the transitions seen between polls:
  a node condition leaving or regaining its healthy status (``k8s.node.condition``: Ready
  turning False or Unknown, a pressure or node-problem-detector condition turning True), a
  node cordoned or uncordoned (``k8s.node.schedulable``), a pod turning Failed or Unknown
  (``k8s.pod.phase``), a container that ended abnormally, OOMKilled included, whether or not
  it restarted (``k8s.container.terminated``), and a container stuck waiting on a bad image
  or a crash loop (``k8s.container.waiting``). The resource is the object's node
  (``host.name``, also the Kafka key; ``k8s`` for cluster-level objects) and its topology id
  (``vigil.entity``).

The first poll only learns the cluster's state: what was already wrong then is in the
inventory and in the Events of the last `backfill_s`, not reported as a change. A pod or node
that appears later is compared with a healthy newcomer, so one that failed before the next
poll is still reported. Counters: received = objects listed, sent = event records plus the
entities of each snapshot sent, errored = failed polls (logged once until the API answers).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from kubernetes import client
from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.events import ClusterEvent, publish_events
from vigil.topology.changes import InventorySnapshot, encode_snapshot
from vigil.topology.kubernetes import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT_S,
    SOURCE,
    JsonObject,
    KubernetesError,
    json_at,
    json_objects,
    json_text,
    kubernetes_snapshot,
    list_all,
    pod_id,
    pod_job,
    pod_node,
    pod_phase,
)
from vigil.topology.model import EntityKind, entity_id

from vigil.bus import Topic

log = logging.getLogger(__name__)

CLUSTER_KEY: Final = SOURCE  # the Kafka key of what concerns no single node
# Waiting reasons that mean a container will not start by itself.
BAD_WAITING: Final = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
                                "InvalidImageName", "CreateContainerConfigError",
                                "CreateContainerError", "RunContainerError"})
BAD_PHASES: Final = frozenset({"Failed", "Unknown"})
_EVENT_TIMES: Final = (("series", "lastObservedTime"), ("lastTimestamp",), ("eventTime",),
                       ("firstTimestamp",), ("metadata", "creationTimestamp"))


def _epoch(text: str) -> float | None:
    """Seconds since the epoch of an API time (RFC 3339, with or without microseconds); a
    time without a zone is taken as UTC, the API's own."""
    try:
        parsed = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    if parsed is None:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _event(name: str, severity: str, body: str, when: float, node: str, entity: str,
           attributes: Mapping[str, str]) -> ClusterEvent:
    attrs = {**attributes, "k8s.node.name": node}
    return ClusterEvent(name=name, entity=entity, key=node or CLUSTER_KEY, host=node, body=body,
                        time=when, severity=severity,
                        attributes={k: v for k, v in attrs.items() if v})


# --- Kubernetes Events -----------------------------------------------------------------------
def event_record(event: JsonObject, pod_nodes: Mapping[tuple[str, str], str],
                 jobs: Collection[str], now: float) -> ClusterEvent:
    """A core/v1 Event as a record: its node is the object's (a Node's own name, a Pod's
    node, else the reporting host), its entity the object's id where the graph has one."""
    involved = event.get("involvedObject")
    kind, name = json_text(json_at(involved, "kind")), json_text(json_at(involved, "name"))
    namespace = json_text(json_at(involved, "namespace"))
    node, entity = "", ""
    if kind == "Node" and name:
        node, entity = name, entity_id(EntityKind.NODE, name)
    elif kind == "Pod" and name:
        node = pod_nodes.get((namespace or "default", name), "")
        entity = entity_id(EntityKind.POD, namespace or "default", name)
    elif name and (job := entity_id(EntityKind.JOB, namespace or "default", name)) in jobs:
        entity = job
    node = node or json_text(json_at(event, "source", "host"))
    # The latest time the event records: a series' last sighting, else its last or only one.
    when = next((t for path in _EVENT_TIMES if (t := _epoch(json_text(json_at(event, *path))))
                 is not None), now)
    count = event.get("count") or json_at(event, "series", "count")
    severity = json_text(event.get("type")) or "Normal"
    return _event(
        "k8s.event", severity, json_text(event.get("message")), when, node, entity, {
            "k8s.event.reason": json_text(event.get("reason")),
            "k8s.event.uid": json_text(json_at(event, "metadata", "uid")),
            "k8s.event.count": json_text(count),
            "k8s.event.source": json_text(event.get("reportingComponent"))
            or json_text(json_at(event, "source", "component")),
            "k8s.object.kind": kind, "k8s.object.name": name,
            "k8s.object.field_path": json_text(json_at(involved, "fieldPath")),
            "k8s.namespace.name": namespace})


# --- changes between polls -------------------------------------------------------------------
def healthy_status(condition: str) -> str:
    """A node condition's healthy status: Ready is True; every other (pressure, network,
    node-problem-detector's KernelDeadlock or GPU conditions) is False when all is well."""
    return "True" if condition == "Ready" else "False"


@dataclass(frozen=True, slots=True)
class _NodeSeen:
    conditions: Mapping[str, str] = field(default_factory=dict)  # type -> status
    unschedulable: bool = False


@dataclass(frozen=True, slots=True)
class _PodSeen:
    phase: str = "Pending"
    # container -> the mark of its latest end, and the bad waiting reason last reported
    terminations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reported_waiting: Mapping[str, str] = field(default_factory=dict)


class ChangeTracker:
    """Remembers what the last poll saw and says what changed since; no I/O.

    Keyed by node name, pod uid (a pod recreated under its old name is a newcomer) and event
    uid, and forgets what the API no longer lists."""

    def __init__(self, backfill_s: float) -> None:
        self.backfill_s = backfill_s
        self._nodes: dict[str, _NodeSeen] | None = None  # None until the first poll
        self._pods: dict[str, _PodSeen] = {}
        self._events: dict[str, str] = {}  # uid -> resourceVersion last reported

    def observe(self, nodes: Iterable[JsonObject], pods: Iterable[JsonObject],
                events: Iterable[JsonObject], now: float) -> list[ClusterEvent]:
        first = self._nodes is None
        out: list[ClusterEvent] = []
        seen_nodes: dict[str, _NodeSeen] = {}
        for node in nodes:
            name = json_text(json_at(node, "metadata", "name"))
            seen_nodes[name], changes = _node_changes(node, name, (self._nodes or {}).get(name),
                                                      now)
            out += changes
        seen_pods: dict[str, _PodSeen] = {}
        pod_nodes: dict[tuple[str, str], str] = {}
        jobs: set[str] = set()
        for pod in pods:
            ident = pod_id(pod)
            uid = json_text(json_at(pod, "metadata", "uid")) or ident
            seen_pods[uid], changes = _pod_changes(pod, ident, self._pods.get(uid, _PodSeen()),
                                                   now)
            out += changes
            namespace, _, name = ident.removeprefix("pod:").partition("/")
            pod_nodes[(namespace, name)] = pod_node(pod)
            if job := pod_job(pod):
                jobs.add(entity_id(EntityKind.JOB, namespace, job))
        if first:
            out = []  # the first poll learns the state; it reports no change
        self._nodes, self._pods = seen_nodes, seen_pods
        versions: dict[str, str] = {}
        for event in events:
            meta = event.get("metadata")
            uid = (json_text(json_at(meta, "uid"))
                   or f"{json_at(meta, 'namespace')}/{json_at(meta, 'name')}")
            versions[uid] = version = json_text(json_at(meta, "resourceVersion"))
            if self._events.get(uid) == version:
                continue
            record = event_record(event, pod_nodes, jobs, now)
            if not first or record.time >= now - self.backfill_s:
                out.append(record)
        self._events = versions
        return out


def _node_changes(node: JsonObject, name: str, before: _NodeSeen | None,
                  now: float) -> tuple[_NodeSeen, list[ClusterEvent]]:
    before = before or _NodeSeen()
    node_entity = entity_id(EntityKind.NODE, name)
    out: list[ClusterEvent] = []
    conditions: dict[str, str] = {}
    for condition in json_objects(json_at(node, "status", "conditions")):
        kind = json_text(condition.get("type"))
        status = conditions[kind] = json_text(condition.get("status")) or "Unknown"
        was = before.conditions.get(kind, healthy_status(kind))
        if not kind or status == was:
            continue
        bad = status != healthy_status(kind)
        when = _epoch(json_text(condition.get("lastTransitionTime"))) or now
        out.append(_event(
            "k8s.node.condition", "Warning" if bad else "Normal",
            f"node {name}: {kind} is {status} (was {was}): {json_text(condition.get('message'))}",
            when, name, node_entity, {
                "k8s.event.reason": json_text(condition.get("reason")) or f"{kind}{status}",
                "k8s.node.condition.type": kind, "k8s.node.condition.status": status,
                "k8s.object.kind": "Node", "k8s.object.name": name}))
    unschedulable = bool(json_at(node, "spec", "unschedulable"))
    if unschedulable != before.unschedulable:
        reason = "NodeNotSchedulable" if unschedulable else "NodeSchedulable"
        out.append(_event(
            "k8s.node.schedulable", "Normal",
            f"node {name} {'cordoned' if unschedulable else 'uncordoned'}", now, name,
            node_entity, {"k8s.event.reason": reason, "k8s.object.kind": "Node",
                          "k8s.object.name": name}))
    return _NodeSeen(conditions, unschedulable), out


def _pod_changes(pod: JsonObject, ident: str, before: _PodSeen,
                 now: float) -> tuple[_PodSeen, list[ClusterEvent]]:
    namespace, _, name = ident.removeprefix("pod:").partition("/")
    node = pod_node(pod)
    about = {"k8s.object.kind": "Pod", "k8s.object.name": name, "k8s.namespace.name": namespace,
             "k8s.pod.name": name, "k8s.pod.uid": json_text(json_at(pod, "metadata", "uid"))}
    out: list[ClusterEvent] = []
    phase = pod_phase(pod)
    if phase != before.phase and phase in BAD_PHASES:
        reason = json_text(json_at(pod, "status", "reason")) or phase
        out.append(_event("k8s.pod.phase", "Warning",
                          f"pod {namespace}/{name} is {phase} (was {before.phase}): "
                          f"{json_text(json_at(pod, 'status', 'message')) or reason}",
                          now, node, ident, {**about, "k8s.event.reason": reason,
                                             "k8s.pod.phase": phase}))
    terminations: dict[str, tuple[str, ...]] = {}
    waiting: dict[str, str] = {}
    statuses = [*json_objects(json_at(pod, "status", "initContainerStatuses")),
                *json_objects(json_at(pod, "status", "containerStatuses"))]
    for status in statuses:
        container = json_text(status.get("name"))
        on_container = {**about, "k8s.container.name": container,
                        "k8s.container.restart_count": json_text(status.get("restartCount"))}
        # The latest end is the current state while it lasts, the last state once restarted;
        # the same end appears in both, so it is known by its container id and time.
        ended = json_at(status, "state", "terminated") or json_at(status, "lastState", "terminated")
        if isinstance(ended, Mapping):
            mark = tuple(json_text(ended.get(key))
                         for key in ("containerID", "finishedAt", "reason", "exitCode"))
            terminations[container] = mark
            reason = json_text(ended.get("reason")) or "Error"
            code = json_text(ended.get("exitCode"))
            if mark != before.terminations.get(container) and (reason != "Completed"
                                                                or code not in ("", "0")):
                out.append(_event(
                    "k8s.container.terminated", "Warning",
                    f"container {container} of pod {namespace}/{name} ended: {reason}, "
                    f"exit code {code or '?'}", _epoch(json_text(ended.get("finishedAt"))) or now,
                    node, ident, {**on_container, "k8s.event.reason": reason,
                                  "k8s.container.exit_code": code}))
        reason = json_text(json_at(status, "state", "waiting", "reason"))
        reported = "" if status.get("ready") else before.reported_waiting.get(container, "")
        if reason in BAD_WAITING and reason != reported:
            reported = reason
            out.append(_event(
                "k8s.container.waiting", "Warning",
                f"container {container} of pod {namespace}/{name} waits: {reason}: "
                f"{json_text(json_at(status, 'state', 'waiting', 'message'))}", now, node, ident,
                {**on_container, "k8s.event.reason": reason}))
        waiting[container] = reported
    return _PodSeen(phase, terminations, waiting), out


# --- the collector ---------------------------------------------------------------------------
class KubernetesCollector(PollingCollector):
    """Every interval, list the cluster and publish its snapshot and what changed."""

    def __init__(self, bus: Publisher, api: client.CoreV1Api, interval_s: float,
                 name: str = "kubernetes", page_size: int = DEFAULT_PAGE_SIZE,
                 timeout_s: float = DEFAULT_TIMEOUT_S, resend_s: float = 300.0,
                 backfill_s: float = 300.0) -> None:
        super().__init__(name, interval_s)
        self.bus = bus
        self.api = api  # vigil.topology.kubernetes.core_api() makes one from a kubeconfig
        self.page_size = page_size
        self.timeout_s = timeout_s
        self.resend_s = resend_s
        self.tracker = ChangeTracker(backfill_s)
        self._sent: InventorySnapshot | None = None
        self._failing = False

    def collect(self, now: float) -> None:
        try:
            nodes = list_all(self.api, "nodes", self.page_size, self.timeout_s)
            pods = list_all(self.api, "pods", self.page_size, self.timeout_s)
            events = list_all(self.api, "events", self.page_size, self.timeout_s)
            snapshot = kubernetes_snapshot(nodes, pods, now)
        except (KubernetesError, ValueError) as exc:
            self.counters.add_errored()
            if not self._failing:  # say it once, not every interval
                log.warning("kubernetes poll failed", extra={"collector": self.name,
                                                             "error": str(exc)})
                self._failing = True
            return
        if self._failing:
            self._failing = False
            log.info("kubernetes poll recovered", extra={"collector": self.name})
        self.counters.add_received(len(nodes) + len(pods) + len(events))
        self._publish_snapshot(snapshot)
        self._publish_events(self.tracker.observe(nodes, pods, events, now))

    def _publish_snapshot(self, snapshot: InventorySnapshot) -> None:
        last = self._sent
        if (last is not None and snapshot.at - last.at < self.resend_s
                and (last.entities, last.relations) == (snapshot.entities, snapshot.relations)):
            return
        self.bus.publish(Topic.INVENTORY, encode_snapshot(snapshot), key=CLUSTER_KEY)
        self.counters.add_sent(len(snapshot.entities))
        self._sent = snapshot

    def _publish_events(self, records: Iterable[ClusterEvent]) -> None:
        self.counters.add_sent(publish_events(self.bus, records))
