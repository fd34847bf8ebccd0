"""The Kubernetes loader: node and pod objects into the graph, and listing a cluster through the
official client.

No API server can be installed here: the live tests talk to `kube_apiserver.KubeApiServer`,
a small local HTTP server that speaks the few core/v1 calls the loader makes.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_apiserver import KubeApiServer, Request, running
from kubernetes import client
from vigil.topology.changes import InventorySnapshot, apply_snapshot
from vigil.topology.graph import Topology
from vigil.topology.kubernetes import (
    KubernetesError,
    apply_kubernetes,
    core_api,
    kubernetes_snapshot,
    list_all,
    pod_resources,
    snake,
    snapshot_kubernetes,
)
from vigil.topology.model import EntityKind, RelationKind
from vigil.topology.queries import blast_radius

K8S = Path(__file__).parent / "data" / "k8s"
T0, T1 = 100.0, 200.0


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((K8S / name).read_text())
    return data


def snapshot(pods: str = "pods.json") -> InventorySnapshot:
    return kubernetes_snapshot(fixture("nodes.json"), fixture(pods), T0)


def edges_of(topo: Topology, at: float | None = None) -> set[tuple[str, str, str]]:
    return {(rel.src, str(rel.kind), rel.dst) for eid in topo.entities(at=at)
            for rel in topo.relations(eid, at) if rel.src == eid}


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    yield from running()


@pytest.fixture
def cluster(kube: KubeApiServer) -> KubeApiServer:
    """The stand-in holding the fixture cluster: 3 nodes, 8 pods."""
    for node in fixture("nodes.json")["items"]:
        kube.put_node(node)
    for pod in fixture("pods.json")["items"]:
        kube.put_pod(pod)
    return kube


# --- nodes -----------------------------------------------------------------------------------
def test_nodes_carry_what_places_them_and_their_health() -> None:
    attrs = {e.id: dict(e.attrs) for e in snapshot().entities}
    assert attrs["node:gpu-a-003"] == {
        "host.name": "gpu-a-003", "k8s.node.name": "gpu-a-003",
        "k8s.node.uid": "0b1f5c1e-0003-4d6a-9a53-1f6f0c1d0003",
        "k8s.node.kubelet.version": "v1.29.4", "k8s.node.unschedulable": "false",
        "k8s.node.taints": "node.kubernetes.io/unreachable:NoExecute,"
                           "node.kubernetes.io/unreachable:NoSchedule",
        "k8s.node.label.topology.kubernetes.io/zone": "zone-a",
        "k8s.node.label.topology.example.com/rack": "r02",
        "k8s.node.label.node.kubernetes.io/instance-type": "hgx-h100-8",
        "k8s.node.label.nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "k8s.node.label.nvidia.com/gpu.count": "8",
        "k8s.node.label.nvidia.com/gpu.memory": "81559",
        "k8s.node.allocatable.nvidia.com/gpu": "8", "k8s.node.capacity.nvidia.com/gpu": "8",
        "k8s.node.allocatable.rdma/rdma_shared_device_a": "63",
        "k8s.node.capacity.rdma/rdma_shared_device_a": "63",
        "k8s.node.condition.memory_pressure": "false", "k8s.node.condition.disk_pressure": "false",
        "k8s.node.condition.pid_pressure": "false", "k8s.node.condition.ready": "unknown",
        "k8s.node.condition.gpu_problem": "true"}
    cordoned = attrs["node:gpu-a-002"]
    assert cordoned["k8s.node.unschedulable"] == "true"
    assert cordoned["k8s.node.taints"] == ("node.kubernetes.io/unschedulable:NoSchedule,"
                                           "nvidia.com/gpu=present:NoSchedule")
    assert attrs["node:gpu-a-001"]["k8s.node.condition.ready"] == "true"


@pytest.mark.parametrize(("kind", "attr"), [
    ("Ready", "ready"), ("MemoryPressure", "memory_pressure"), ("PIDPressure", "pid_pressure"),
    ("NetworkUnavailable", "network_unavailable"), ("GPUProblem", "gpu_problem"),
    ("KernelDeadlock", "kernel_deadlock")])
def test_condition_names_become_snake_case(kind: str, attr: str) -> None:
    assert snake(kind) == attr


# --- pods ------------------------------------------------------------------------------------
def test_pods_carry_their_requests_owner_and_job() -> None:
    attrs = {e.id: dict(e.attrs) for e in snapshot().entities}
    assert attrs["pod:train/llm-70b-worker-0"] == {
        "k8s.pod.name": "llm-70b-worker-0", "k8s.namespace.name": "train",
        "k8s.pod.uid": "5d0c0000-0000-4000-8000-000000000002", "k8s.node.name": "gpu-a-002",
        "k8s.pod.phase": "Running", "k8s.owner.api_version": "kubeflow.org/v1",
        "k8s.owner.kind": "PyTorchJob", "k8s.owner.name": "llm-70b",
        "k8s.pod.label.training.kubeflow.org/job-name": "llm-70b",
        "k8s.pod.label.training.kubeflow.org/replica-type": "worker",
        "k8s.pod.label.training.kubeflow.org/replica-index": "0",
        "k8s.pod.request.nvidia.com/gpu": "8", "k8s.pod.limit.nvidia.com/gpu": "8"}
    ascend = attrs["pod:eval/eval-ascend-0"]
    assert ascend["k8s.pod.request.huawei.com/Ascend910"] == "4"
    assert not any(key.startswith("k8s.pod.request.nvidia") for key in ascend)
    # A Volcano Job is not a batch Job: no k8s.job.name, which OpenTelemetry gives batch Jobs.
    assert "k8s.job.name" not in ascend
    assert attrs["pod:batch/prep-data-x7k2p"]["k8s.job.name"] == "prep-data"
    assert attrs["pod:infer/kv-cache-0"]["k8s.statefulset.name"] == "kv-cache"
    assert attrs["job:train/llm-70b"] == {
        "k8s.namespace.name": "train", "k8s.training_job.name": "llm-70b",
        "k8s.training_job.kind": "PyTorchJob", "k8s.training_job.api_version": "kubeflow.org/v1"}


def test_effective_request_counts_the_largest_init_container() -> None:
    pod = next(p for p in fixture("pods.json")["items"]
               if p["metadata"]["name"] == "prep-data-x7k2p")
    assert pod_resources(pod, "requests") == {"nvidia.com/gpu": "2"}  # init 2 > app 1
    pod["spec"]["containers"].append(copy.deepcopy(pod["spec"]["containers"][0]))
    assert pod_resources(pod, "requests") == {"nvidia.com/gpu": "2"}  # 1 + 1 = 2
    pod["spec"]["containers"].append(copy.deepcopy(pod["spec"]["containers"][0]))
    assert pod_resources(pod, "requests") == {"nvidia.com/gpu": "3"}


def test_a_request_that_is_no_quantity_names_the_pod() -> None:
    pods = fixture("pods.json")
    pods["items"][0]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "lots"
    with pytest.raises(ValueError, match="pod:batch/prep-data-x7k2p: requests of container 'prep'"):
        kubernetes_snapshot(fixture("nodes.json"), pods, T0)


def test_relations_pending_and_ended_pods() -> None:
    snap = snapshot()
    ids = {e.id for e in snap.entities}
    assert "pod:train/llm-7b-worker-0" not in ids  # Failed: ended, so not listed
    assert "job:train/llm-7b" not in ids  # its only pod ended
    assert {(r.src, str(r.kind), r.dst) for r in snap.relations} == {
        ("pod:train/llm-70b-master-0", "runs_on", "node:gpu-a-001"),
        ("pod:train/llm-70b-master-0", "member_of", "job:train/llm-70b"),
        ("pod:train/llm-70b-worker-0", "runs_on", "node:gpu-a-002"),
        ("pod:train/llm-70b-worker-0", "member_of", "job:train/llm-70b"),
        ("pod:train/llm-70b-worker-1", "member_of", "job:train/llm-70b"),  # pending: no node
        ("pod:eval/eval-ascend-0", "runs_on", "node:gpu-a-003"),
        ("pod:eval/eval-ascend-0", "member_of", "job:eval/eval-ascend"),
        ("pod:batch/prep-data-x7k2p", "runs_on", "node:gpu-a-001"),
        ("pod:batch/prep-data-x7k2p", "member_of", "job:batch/prep-data"),
        ("pod:gpu-operator/nvidia-dcgm-exporter-abcde", "runs_on", "node:gpu-a-001"),
        ("pod:infer/kv-cache-0", "runs_on", "node:gpu-a-002"),
    }
    assert snap.kinds == {EntityKind.NODE, EntityKind.POD, EntityKind.JOB}


def test_a_failing_node_impacts_its_pods_and_their_job() -> None:
    topo = apply_kubernetes(None, fixture("nodes.json"), fixture("pods.json"), T0)
    # Pods carry their node's k8s.node.name too; the lookup still finds the node.
    assert topo.index("k8s.node.name", "gpu-a-002") == "node:gpu-a-002"
    hit = set(blast_radius(topo, "node:gpu-a-002"))
    assert {"pod:train/llm-70b-worker-0", "pod:infer/kv-cache-0", "job:train/llm-70b"} <= hit
    assert "pod:train/llm-70b-master-0" not in hit


def test_a_pod_that_moved_keeps_its_old_node_in_history() -> None:
    topo = apply_kubernetes(None, fixture("nodes.json"), fixture("pods.json"), T0)
    apply_kubernetes(topo, fixture("nodes.json"), fixture("pods-later.json"), T1)
    moved = "pod:infer/kv-cache-0"
    now, before = edges_of(topo), edges_of(topo, at=T0 + 50)
    assert (moved, "runs_on", "node:gpu-a-003") in now
    assert (moved, "runs_on", "node:gpu-a-002") not in now
    assert (moved, "runs_on", "node:gpu-a-002") in before
    assert (moved, "runs_on", "node:gpu-a-003") not in before
    assert topo.attr(moved, "k8s.pod.uid") == "5d0c0000-0000-4000-8000-000000000009"
    # The batch pod ended between the two lists: it and its job are retired, not forgotten.
    assert not topo.exists("pod:batch/prep-data-x7k2p")
    assert not topo.exists("job:batch/prep-data")
    assert topo.exists("job:batch/prep-data", at=T0 + 50)


def test_other_sources_attributes_stay() -> None:
    topo = Topology()
    topo.add_entity("node:gpu-a-001", {"host.name": "gpu-a-001", "slurm.node": "gpu-a-001"})
    topo.add_entity("node:slurm-only", {"host.name": "slurm-only", "slurm.node": "slurm-only"})
    apply_kubernetes(topo, fixture("nodes.json"), fixture("pods.json"), T0)
    assert topo.attr("node:gpu-a-001", "slurm.node") == "gpu-a-001"
    assert topo.attr("node:gpu-a-001", "k8s.node.name") == "gpu-a-001"
    assert topo.exists("node:slurm-only")  # Kubernetes does not retire what it does not own


@pytest.mark.parametrize("listing", [{"items": [{"metadata": {}}]}, {"items": "nodes"}, 42])
def test_what_is_not_a_kubernetes_list_is_refused(listing: object) -> None:
    with pytest.raises(ValueError, match=r"metadata\.name|not a Kubernetes list"):
        kubernetes_snapshot(listing, [], T0)


# --- through the official client -------------------------------------------------------------
def test_the_clients_models_read_as_their_json(cluster: KubeApiServer) -> None:
    api = cluster.core_api()
    models = (api.list_node(), api.list_pod_for_all_namespaces())
    assert isinstance(models[0], client.V1NodeList)
    assert kubernetes_snapshot(*models, T0) == snapshot()


def test_snapshot_through_the_client_pages_the_lists(cluster: KubeApiServer) -> None:
    assert snapshot_kubernetes(T0, cluster.core_api(), page_size=3) == snapshot()
    nodes = cluster.requests_to("GET", "/api/v1/nodes")
    pods = cluster.requests_to("GET", "/api/v1/pods")
    assert [r.query.get("limit") for r in nodes] == ["3"]  # three nodes fit in one page
    assert len(pods) == 3  # eight pods, three a page
    assert "continue" not in pods[0].query
    assert all(r.query.get("continue") for r in pods[1:])


def test_an_expired_continue_token_restarts_the_list_once(cluster: KubeApiServer) -> None:
    compacted: list[Request] = []

    def compact(request: Request) -> None:  # etcd compacts once, while the client pages
        if request.query.get("continue") and not compacted:
            compacted.append(request)
            cluster.expire_continue_tokens()

    cluster.on_request = compact
    pods = list_all(cluster.core_api(), "pods", page_size=3)
    assert len(pods) == 8
    assert len(cluster.requests_to("GET", "/api/v1/pods")) == 1 + 1 + 3  # failed, then whole


def test_a_token_that_keeps_expiring_is_an_error(cluster: KubeApiServer) -> None:
    cluster.on_request = lambda request: cluster.expire_continue_tokens()
    with pytest.raises(KubernetesError, match=r"listing pods failed: HTTP 410 .*too old"):
        list_all(cluster.core_api(), "pods", page_size=3)


def test_api_errors_name_the_server_and_the_call(kube: KubeApiServer) -> None:
    kube.fail_with = 403
    with pytest.raises(KubernetesError) as caught:
        snapshot_kubernetes(T0, kube.core_api())
    assert str(caught.value).startswith(f"{kube.url}: listing nodes failed: HTTP 403")
    assert "told to fail" in str(caught.value)


def test_an_unreachable_server_is_an_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = client.Configuration(host=f"http://127.0.0.1:{port}", no_proxy="*")
    config.retries = False
    with pytest.raises(KubernetesError, match=f"127.0.0.1:{port}: listing nodes failed"):
        snapshot_kubernetes(T0, client.CoreV1Api(client.ApiClient(config)), timeout_s=2)


def test_core_api_reads_a_kubeconfig(cluster: KubeApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({  # YAML's JSON subset
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": cluster.url}}],
        "users": [{"name": "tester", "user": {"token": "stand-in-token"}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "tester"}}],
    }))
    api = core_api(str(kubeconfig))
    api.api_client.configuration.no_proxy = "*"
    assert len(snapshot_kubernetes(T0, api).entities) == len(snapshot().entities)


def test_core_api_without_a_config_is_a_clear_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "no-such-kubeconfig"
    with pytest.raises(KubernetesError, match=f"no Kubernetes API server from {missing}"):
        core_api(str(missing))


def test_applied_snapshot_from_the_client_matches_the_pure_one(cluster: KubeApiServer) -> None:
    live, pure = Topology(), Topology()
    apply_snapshot(live, snapshot_kubernetes(T0, cluster.core_api(), page_size=2))
    apply_snapshot(pure, snapshot())
    assert edges_of(live) == edges_of(pure)
    assert live.index("k8s.pod.name", "kv-cache-0") == "pod:infer/kv-cache-0"
    assert [rel.dst for rel in live.relations("pod:infer/kv-cache-0")
            if rel.kind is RelationKind.RUNS_ON] == ["node:gpu-a-002"]


# --- the stand-in's write calls, which recovery executors will make --------------------------
def test_the_stand_in_cordons_labels_evicts_and_deletes(cluster: KubeApiServer) -> None:
    api = cluster.core_api()
    api.patch_node("gpu-a-001", {"spec": {"unschedulable": True, "taints": [
        {"key": "vigil.io/fault", "value": "xid-79", "effect": "NoSchedule"}]},
        "metadata": {"labels": {"vigil.io/state": "repair"}}})
    node = api.read_node("gpu-a-001")
    assert node.spec.unschedulable is True
    assert [taint.key for taint in node.spec.taints] == ["vigil.io/fault"]
    assert node.metadata.labels["vigil.io/state"] == "repair"
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    [patch] = cluster.requests_to("PATCH", "/api/v1/nodes/gpu-a-001")
    assert patch.body["spec"]["unschedulable"] is True

    eviction = {"metadata": {"name": "kv-cache-0", "namespace": "infer"}}
    cluster.eviction_blocked.add(("infer", "kv-cache-0"))
    with pytest.raises(client.ApiException) as refused:
        api.create_namespaced_pod_eviction("kv-cache-0", "infer", eviction)
    assert refused.value.status == 429
    cluster.eviction_blocked.clear()
    api.create_namespaced_pod_eviction("kv-cache-0", "infer", eviction)
    assert ("infer", "kv-cache-0") not in cluster.pods

    api.delete_namespaced_pod("prep-data-x7k2p", "batch")
    with pytest.raises(client.ApiException) as gone:
        api.delete_namespaced_pod("prep-data-x7k2p", "batch")
    assert gone.value.status == 404
    assert [r.path for r in cluster.requests_to("DELETE", "/api/v1/namespaces/batch/")] == [
        "/api/v1/namespaces/batch/pods/prep-data-x7k2p"] * 2
