"""The Kubernetes collector: inventory snapshots, Kubernetes Events and the changes it sees
between polls, published once each.

No API server can be installed here: the collector talks to `kube_apiserver.KubeApiServer`,
a small local HTTP server that speaks the few core/v1 calls it makes (list nodes, pods and
events, page by page), through the official client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from collector_fakes import RecordingBus, Tally
from kube_apiserver import KubeApiServer, running
from vigil.collectors.kubernetes import KubernetesCollector
from vigil.topology.changes import apply_snapshot, decode_snapshot
from vigil.topology.graph import Topology
from vigil.topology.model import RelationKind

from vigil.bus import Topic
from vigil.otlp import LogBatch, decode_logs

NOW = 1_718_000_000.0
STAMP = "2024-06-10T06:13:20Z"  # NOW as the API writes times


def node(name: str, ready: str = "True", unschedulable: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [
                {"type": "MemoryPressure", "status": "False",
                 "reason": "KubeletHasSufficientMemory"},
                {"type": "Ready", "status": ready, "lastTransitionTime": STAMP,
                 "reason": "KubeletReady" if ready == "True" else "KubeletNotReady",
                 "message": "container runtime is down" if ready != "True" else ""}]}}


def container_status(restarts: int = 0, last: dict[str, Any] | None = None,
                     state: dict[str, Any] | None = None, ready: bool = True) -> dict[str, Any]:
    return {"name": "trainer", "ready": ready, "restartCount": restarts,
            "state": state or {"running": {"startedAt": STAMP}}, "lastState": last or {}}


def pod(name: str, on: str, phase: str = "Running", namespace: str = "train",
        status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "labels": {"training.kubeflow.org/job-name": "llm"}},
            "spec": {"nodeName": on, "containers": [
                {"name": "trainer", "resources": {"requests": {"nvidia.com/gpu": "8"}}}]},
            "status": {"phase": phase, "containerStatuses": [status or container_status()]}}


OOM = {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": STAMP,
                      "containerID": "containerd://0a1b"}}


def event(name: str, kind: str, involved: str, reason: str, version_count: int = 1,
          when: str = STAMP, namespace: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "involvedObject": {"kind": kind, "name": involved,
                               "namespace": "" if kind == "Node" else namespace},
            "reason": reason, "message": f"{reason} happened", "type": "Warning",
            "count": version_count, "lastTimestamp": when,
            "source": {"component": "kubelet", "host": "n1"}}


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    yield from running()


@pytest.fixture
def cluster(kube: KubeApiServer) -> KubeApiServer:
    """Two nodes, a training pod on each."""
    kube.put_node(node("n1"))
    kube.put_node(node("n2"))
    kube.put_pod(pod("w0", on="n1"))
    kube.put_pod(pod("w1", on="n2"))
    return kube


@pytest.fixture
def collector(cluster: KubeApiServer, bus: RecordingBus,
              tally: Tally) -> Iterator[KubernetesCollector]:
    made = KubernetesCollector(bus, cluster.core_api(), interval_s=3600.0,
                               page_size=2, timeout_s=5.0)
    made.counters = tally.component
    yield made
    made.shutdown()


def events_in(bus: RecordingBus, since: int = 0) -> list[tuple[str | None, LogBatch]]:
    """(Kafka key, batch) of every event batch published from message `since` on."""
    return [(msg.key, batch) for msg in bus.published[since:] if msg.topic == Topic.EVENTS
            for batch in decode_logs(msg.value)]


def lines_in(bus: RecordingBus, since: int = 0) -> list[dict[str, str]]:
    """Every event record from message `since` on, flattened: attributes, resource, key."""
    return [{**line.attributes, **{f"resource.{k}": v for k, v in batch.resource.items()},
             "key": key or "", "severity": line.severity_text, "body": line.body}
            for key, batch in events_in(bus, since) for line in batch.lines]


def test_the_snapshot_on_inventory_decodes_and_applies(collector: KubernetesCollector,
                                                       bus: RecordingBus, tally: Tally) -> None:
    collector.collect(NOW)
    [message] = [m for m in bus.published if m.topic == Topic.INVENTORY]
    assert message.key == "k8s"
    snapshot = decode_snapshot(message.value)
    assert snapshot.source == "k8s"
    assert snapshot.at == NOW
    topo = Topology()
    apply_snapshot(topo, snapshot)
    assert [r.dst for r in topo.relations("pod:train/w1") if r.kind is RelationKind.RUNS_ON] \
        == ["node:n2"]
    assert topo.attr("node:n1", "k8s.node.allocatable.nvidia.com/gpu") == "8"
    assert tally.totals()["received"] == 4  # two nodes, two pods, no events
    assert tally.totals()["sent"] == 5  # the snapshot's entities: two nodes, two pods, a job
    assert lines_in(bus) == []  # the first poll only learns the state


def test_an_unchanged_snapshot_is_not_sent_again_until_resend(
        collector: KubernetesCollector, cluster: KubeApiServer, bus: RecordingBus) -> None:
    def inventories() -> int:
        return sum(m.topic == Topic.INVENTORY for m in bus.published)

    collector.collect(NOW)
    collector.collect(NOW + 10)
    assert inventories() == 1
    cluster.put_pod(pod("w2", on="n1"))
    collector.collect(NOW + 20)
    assert inventories() == 2
    collector.collect(NOW + 20 + collector.resend_s)
    assert inventories() == 3


def test_node_not_ready_and_oom_killed_are_reported_once(
        collector: KubernetesCollector, cluster: KubeApiServer, bus: RecordingBus) -> None:
    collector.collect(NOW)
    cluster.put_node(node("n2", ready="False"))
    cluster.put_pod(pod("w0", on="n1", status=container_status(restarts=1, last=OOM)))
    collector.collect(NOW + 10)
    lines = sorted(lines_in(bus), key=lambda line: line["event.name"])
    assert [(line["event.name"], line["k8s.event.reason"], line["key"]) for line in lines] == [
        ("k8s.container.terminated", "OOMKilled", "n1"),
        ("k8s.node.condition", "KubeletNotReady", "n2")]
    oom, not_ready = lines
    assert oom["resource.vigil.entity"] == "pod:train/w0"
    assert oom["resource.host.name"] == "n1"
    assert oom["k8s.container.name"] == "trainer"
    assert oom["k8s.container.exit_code"] == "137"
    assert oom["severity"] == "Warning"
    assert not_ready["resource.vigil.entity"] == "node:n2"
    assert not_ready["k8s.node.condition.type"] == "Ready"
    assert not_ready["k8s.node.condition.status"] == "False"
    assert "container runtime is down" in not_ready["body"]
    seen = len(bus.published)
    collector.collect(NOW + 20)
    assert lines_in(bus, seen) == []


def test_recovery_cordon_and_failed_pods_are_reported(
        collector: KubernetesCollector, cluster: KubeApiServer, bus: RecordingBus) -> None:
    cluster.put_node(node("n2", ready="Unknown"))
    collector.collect(NOW)
    cluster.put_node(node("n2", ready="True"))
    cluster.put_node(node("n1", unschedulable=True))
    cluster.put_pod(pod("w1", on="n2", phase="Failed",
                        status=container_status(state=OOM, ready=False)))
    collector.collect(NOW + 10)
    got = {(line["event.name"], line["k8s.event.reason"], line["severity"])
           for line in lines_in(bus)}
    assert got == {("k8s.node.condition", "KubeletReady", "Normal"),
                   ("k8s.node.schedulable", "NodeNotSchedulable", "Normal"),
                   ("k8s.pod.phase", "Failed", "Warning"),
                   ("k8s.container.terminated", "OOMKilled", "Warning")}


def test_a_new_pod_stuck_in_a_crash_loop_is_reported_once(
        collector: KubernetesCollector, cluster: KubeApiServer, bus: RecordingBus) -> None:
    collector.collect(NOW)
    looping = container_status(restarts=3, ready=False, state={"waiting": {
        "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
        last={"terminated": {"reason": "Error", "exitCode": 1, "finishedAt": STAMP,
                             "containerID": "containerd://ffee"}})
    cluster.put_pod(pod("w2", on="n1", status=looping))
    collector.collect(NOW + 10)
    collector.collect(NOW + 20)
    assert sorted((line["event.name"], line["k8s.event.reason"]) for line in lines_in(bus)) == [
        ("k8s.container.terminated", "Error"), ("k8s.container.waiting", "CrashLoopBackOff")]


def test_kubernetes_events_are_sent_once_per_version(
        collector: KubernetesCollector, cluster: KubeApiServer, bus: RecordingBus) -> None:
    cluster.put_event(event("n2.17d", "Node", "n2", "NodeNotReady"))
    cluster.put_event(event("old.17a", "Node", "n1", "Rebooted", when="2024-06-10T05:00:00Z"))
    cluster.put_event(event("w1.17e", "Pod", "w1", "BackOff", namespace="train"))
    collector.collect(NOW)
    lines = {line["k8s.event.reason"]: line for line in lines_in(bus)}
    assert set(lines) == {"NodeNotReady", "BackOff"}  # the old one is before the backfill
    assert lines["NodeNotReady"]["resource.vigil.entity"] == "node:n2"
    assert lines["NodeNotReady"]["key"] == "n2"
    assert lines["NodeNotReady"]["event.name"] == "k8s.event"
    assert lines["BackOff"]["resource.vigil.entity"] == "pod:train/w1"
    assert lines["BackOff"]["resource.host.name"] == "n2"  # the pod's node, not the reporter
    assert lines["BackOff"]["k8s.namespace.name"] == "train"
    seen = len(bus.published)
    collector.collect(NOW + 10)
    assert lines_in(bus, seen) == []
    cluster.put_event(event("w1.17e", "Pod", "w1", "BackOff", version_count=2,
                            namespace="train"))
    collector.collect(NOW + 20)
    assert [line["k8s.event.count"] for line in lines_in(bus, seen)] == ["2"]


def test_an_api_in_trouble_is_counted_and_logged_once(
        collector: KubernetesCollector, cluster: KubeApiServer, bus: RecordingBus,
        tally: Tally, caplog: pytest.LogCaptureFixture) -> None:
    cluster.fail_with = 503
    with caplog.at_level(logging.INFO, logger="vigil.collectors.kubernetes"):
        collector.collect(NOW)
        collector.collect(NOW + 10)
        assert tally.totals()["errored"] == 2
        assert bus.published == []
        cluster.fail_with = None
        collector.collect(NOW + 20)
    assert [r.getMessage() for r in caplog.records] == ["kubernetes poll failed",
                                                        "kubernetes poll recovered"]
    assert "HTTP 503" in caplog.records[0].__dict__["error"]
    assert [m.topic for m in bus.published] == [Topic.INVENTORY]


def test_an_unreachable_api_does_not_stop_the_collector(
        cluster: KubeApiServer, bus: RecordingBus, tally: Tally) -> None:
    api = cluster.core_api()
    cluster.stop()  # nothing listens on its port any more
    collector = KubernetesCollector(bus, api, interval_s=0.05)
    collector.counters = tally.component
    collector.start()
    try:
        for _ in range(200):
            if tally.totals()["errored"] >= 2:
                break
            collector.stopping.wait(0.02)
    finally:
        collector.shutdown()
    assert tally.totals()["errored"] >= 2
    assert bus.published == []


def test_hostile_names_are_just_data(kube: KubeApiServer, bus: RecordingBus) -> None:
    hostile = "n1; rm -rf /"
    kube.put_node(node(hostile))
    kube.put_pod(pod("$(reboot)", on=hostile))
    collector = KubernetesCollector(bus, kube.core_api(), interval_s=3600.0)
    collector.collect(NOW)
    kube.put_node(node(hostile, ready="False"))
    collector.collect(NOW + 10)
    inventory = [m for m in bus.published if m.topic == Topic.INVENTORY][-1]
    topo = Topology()
    apply_snapshot(topo, decode_snapshot(inventory.value))
    assert topo.attr("node:n1; rm -rf /", "k8s.node.condition.ready") == "false"
    assert topo.attr("node:n1; rm -rf /", "host.name") == hostile
    assert [r.dst for r in topo.relations("pod:train/$(reboot)")
            if r.kind is RelationKind.RUNS_ON] == ["node:n1; rm -rf /"]
    [line] = lines_in(bus)
    assert (line["key"], line["resource.host.name"], line["resource.vigil.entity"]) == (
        hostile, hostile, "node:n1; rm -rf /")
