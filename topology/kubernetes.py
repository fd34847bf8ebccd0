"""Loading what Kubernetes knows (nodes, pods, their accelerator requests, training jobs) into
the graph, through the official client.

The graph, in the model's ids: ``node:<name>`` (attrs ``host.name`` and ``k8s.node.*``: the
labels that place it and name its accelerators, allocatable and capacity of extended
resources, every condition, cordon and taints) and ``pod:<namespace>/<name>`` (``k8s.pod.*``,
its effective extended-resource requests and limits, its owner) which runs_on its node, so a
failing node impacts its pods. A pod labelled with a training job's name
(``training.kubeflow.org/job-name``, ``volcano.sh/job-name``, a batch Job's ``job-name``) is
member_of ``job:<namespace>/<name>``, listed here with ``k8s.*`` attrs, so a failing pod
impacts its job. Containers are not entities: Kubernetes restarts them in place, and the
collector reports their terminations as events on the pod.

Pods that ended (Succeeded, Failed) are not listed, so they are retired; a pending pod has no
node yet, so no runs_on. A load is an inventory snapshot of source ``k8s`` (see
`vigil.topology.changes`): only entities carrying ``k8s.*`` attrs are retired by it.

The pure functions take the API's objects as JSON dicts or as the official client's models
(``V1NodeList``, ``V1Pod``, ...); `snapshot_kubernetes` asks a live API server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from functools import cache
from typing import Any, Final, Literal

import urllib3
from kubernetes import client, config, utils
from vigil.topology.changes import EntityRecord, InventorySnapshot, apply_snapshot
from vigil.topology.graph import Topology
from vigil.topology.model import EntityKind, Relation, RelationKind, entity_id

SOURCE: Final = "k8s"
DEFAULT_PAGE_SIZE: Final = 500  # objects per list call: big clusters arrive in pages
DEFAULT_TIMEOUT_S: Final = 30.0
ENDED_PHASES: Final = frozenset({"Succeeded", "Failed"})
# Node labels worth keeping besides every ``topology.*/...`` one (zone, region, rack, block):
# what names the accelerators and the machine. `node_labels` replaces this list.
NODE_LABELS: Final = ("nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory",
                      "nvidia.com/gpu.clique", "accelerator", "node.kubernetes.io/instance-type")
# Labels naming the training job of a pod, most specific first.
JOB_LABELS: Final = ("training.kubeflow.org/job-name", "volcano.sh/job-name",
                     "batch.kubernetes.io/job-name", "job-name")
# Pod labels kept: the job's name and the pod's place in it (its replica or completion index).
POD_LABELS: Final = (*JOB_LABELS, "training.kubeflow.org/replica-type",
                     "training.kubeflow.org/replica-index", "volcano.sh/task-spec",
                     "batch.kubernetes.io/job-completion-index")
# Owners with an OpenTelemetry attribute of their own (k8s.job.name, ...).
_SEMCONV_OWNERS: Final = frozenset({("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet"),
                                    ("apps/v1", "DaemonSet"), ("batch/v1", "Job")})
_KINDS: Final = frozenset({EntityKind.NODE, EntityKind.POD, EntityKind.JOB})
_MANAGES: Final = frozenset({(RelationKind.RUNS_ON, EntityKind.NODE),
                             (RelationKind.MEMBER_OF, EntityKind.JOB)})
_TOPOLOGY_LABEL: Final = re.compile(r"topology\.[^/]+/")
_WORD_START: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_LISTERS: Final = {"nodes": "list_node", "pods": "list_pod_for_all_namespaces",
                   "events": "list_event_for_all_namespaces"}

Resource = Literal["nodes", "pods", "events"]
JsonObject = Mapping[str, Any]

# The client's models and API classes are typed, its config and utils functions are not:
# their signatures, so that calls to them are checked.
_parse_quantity: Callable[[str], Decimal] = utils.parse_quantity
_load_incluster_config: Callable[..., None] = config.load_incluster_config
_load_kube_config: Callable[..., None] = config.load_kube_config


class KubernetesError(RuntimeError):
    """The API server cannot be reached, refused a call, or answered what is not Kubernetes'."""


# --- the API's objects -----------------------------------------------------------------------
@cache
def _serializer() -> Any:
    return client.ApiClient()


def as_json(obj: object) -> Any:
    """An API object as its JSON form: dicts pass through, the client's models are converted
    (their keys become the API's camelCase, their times ISO 8601 text)."""
    if isinstance(obj, Mapping):
        return obj
    return _serializer().sanitize_for_serialization(obj)


def items_of(listing: object) -> list[JsonObject]:
    """The objects of a list (``V1PodList``, its JSON, or a plain sequence of objects)."""
    data = as_json(listing)
    items = data.get("items") if isinstance(data, Mapping) else data
    if not isinstance(items, list):
        raise ValueError(f"not a Kubernetes list: {type(listing).__name__}")
    objects = [as_json(item) for item in items]
    for i, item in enumerate(objects):
        if not isinstance(item, Mapping) or not json_text(json_at(item, "metadata", "name")):
            raise ValueError(f"item {i} of the list has no metadata.name: {item!r:.200}")
    return objects


def json_at(obj: Any, *path: str) -> Any:
    """The value at `path` in nested JSON objects, or None where any step is missing."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def json_text(value: Any) -> str:
    """A JSON scalar as text; "" for null."""
    return value if isinstance(value, str) else "" if value is None else str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def json_objects(value: Any) -> list[JsonObject]:
    """The objects of a JSON list; [] for anything else."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def snake(name: str) -> str:
    """A CamelCase Kubernetes name as an attribute part: ``PIDPressure`` -> ``pid_pressure``."""
    return _WORD_START.sub("_", name).lower()


def is_extended_resource(name: str) -> bool:
    """Accelerators and devices (``nvidia.com/gpu``, ``huawei.com/Ascend910``, ``rdma/hca``):
    resources in a domain that is not Kubernetes' own (cpu, memory, hugepages-*)."""
    domain, slash, _ = name.partition("/")
    return bool(slash) and domain != "kubernetes.io" and not domain.endswith(".kubernetes.io")


# --- nodes -----------------------------------------------------------------------------------
def node_conditions(node: JsonObject) -> dict[str, str]:
    """Condition type -> status (``True``/``False``/``Unknown``), as the API spells them."""
    return {json_text(c.get("type")): json_text(c.get("status")) or "Unknown"
            for c in json_objects(json_at(node, "status", "conditions")) if c.get("type")}


def node_attrs(node: JsonObject, labels: Collection[str] = NODE_LABELS) -> dict[str, str]:
    """The node's attributes in the graph; see the module docstring."""
    name = json_text(json_at(node, "metadata", "name"))
    spec, status = json_at(node, "spec"), json_at(node, "status")
    taints = sorted(f"{t.get('key')}{'=' + json_text(t['value']) if t.get('value') else ''}"
                    f":{t.get('effect')}" for t in json_objects(json_at(spec, "taints")))
    attrs = {"host.name": name, "k8s.node.name": name,
             "k8s.node.uid": json_text(json_at(node, "metadata", "uid")),
             "k8s.node.kubelet.version": json_text(json_at(status, "nodeInfo", "kubeletVersion")),
             "k8s.node.unschedulable": "true" if json_at(spec, "unschedulable") else "false",
             "k8s.node.taints": ",".join(taints)}
    for key, value in _mapping(json_at(node, "metadata", "labels")).items():
        if key in labels or _TOPOLOGY_LABEL.match(key):
            attrs[f"k8s.node.label.{key}"] = json_text(value)
    for field in ("allocatable", "capacity"):
        for resource, quantity in _mapping(json_at(status, field)).items():
            if is_extended_resource(resource):
                attrs[f"k8s.node.{field}.{resource}"] = json_text(quantity)
    for kind, status in node_conditions(node).items():
        attrs[f"k8s.node.condition.{snake(kind)}"] = status.lower()
    return {key: value for key, value in attrs.items() if value}


# --- pods ------------------------------------------------------------------------------------
def pod_phase(pod: JsonObject) -> str:
    return json_text(json_at(pod, "status", "phase")) or "Unknown"


def pod_id(pod: JsonObject) -> str:
    meta = _mapping(pod.get("metadata"))
    return entity_id(EntityKind.POD, json_text(meta.get("namespace")) or "default",
                     json_text(meta.get("name")))


def pod_node(pod: JsonObject) -> str:
    """The node the pod is bound to; "" while it waits for the scheduler."""
    return json_text(json_at(pod, "spec", "nodeName"))


def pod_job(pod: JsonObject) -> str:
    """The training job the pod's labels name, or ""."""
    labels = _mapping(json_at(pod, "metadata", "labels"))
    return next((json_text(labels[key]) for key in JOB_LABELS if labels.get(key)), "")


def pod_owner(pod: JsonObject) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of the pod's controller (or first owner); empty for a bare
    pod. The apiVersion tells a Volcano ``Job`` from a batch one."""
    owners = json_objects(json_at(pod, "metadata", "ownerReferences"))
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else {})
    api_version, kind, name = (json_text(owner.get(key)) for key in ("apiVersion", "kind", "name"))
    return api_version, kind, name


def pod_resources(pod: JsonObject, field: Literal["requests", "limits"]) -> dict[str, str]:
    """The pod's effective extended-resource `field`, as the scheduler counts it: the sum over
    its containers, or the most any one init container asks if that is more."""
    def amounts(container: JsonObject) -> dict[str, Decimal]:
        wanted = _mapping(json_at(container, "resources", field))
        try:
            return {name: _parse_quantity(json_text(q)) for name, q in wanted.items()
                    if is_extended_resource(name)}
        except ValueError as exc:
            raise ValueError(f"{pod_id(pod)}: {field} of container "
                             f"{container.get('name')!r}: {exc}") from None

    total: dict[str, Decimal] = {}
    for container in json_objects(json_at(pod, "spec", "containers")):
        for name, amount in amounts(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    for container in json_objects(json_at(pod, "spec", "initContainers")):
        for name, amount in amounts(container).items():
            total[name] = max(total.get(name, Decimal(0)), amount)
    return {name: _quantity_text(amount) for name, amount in sorted(total.items())}


def _quantity_text(amount: Decimal) -> str:
    return str(int(amount)) if amount == amount.to_integral_value() else str(amount.normalize())


def pod_attrs(pod: JsonObject) -> dict[str, str]:
    """The pod's attributes in the graph; see the module docstring."""
    meta = _mapping(pod.get("metadata"))
    owner_api, owner_kind, owner_name = pod_owner(pod)
    attrs = {"k8s.pod.name": json_text(meta.get("name")),
             "k8s.namespace.name": json_text(meta.get("namespace")) or "default",
             "k8s.pod.uid": json_text(meta.get("uid")), "k8s.node.name": pod_node(pod),
             "k8s.pod.phase": pod_phase(pod), "k8s.owner.api_version": owner_api,
             "k8s.owner.kind": owner_kind, "k8s.owner.name": owner_name}
    if (owner_api, owner_kind) in _SEMCONV_OWNERS:
        attrs[f"k8s.{owner_kind.lower()}.name"] = owner_name
    for key, value in _mapping(meta.get("labels")).items():
        if key in POD_LABELS:
            attrs[f"k8s.pod.label.{key}"] = json_text(value)
    for resource, amount in pod_resources(pod, "requests").items():
        attrs[f"k8s.pod.request.{resource}"] = amount
    for resource, amount in pod_resources(pod, "limits").items():
        attrs[f"k8s.pod.limit.{resource}"] = amount
    return {key: value for key, value in attrs.items() if value}


def _job_attrs(pod: JsonObject, name: str) -> dict[str, str]:
    owner_api, owner_kind, owner_name = pod_owner(pod)
    attrs = {"k8s.namespace.name": json_text(json_at(pod, "metadata", "namespace")) or "default",
             "k8s.training_job.name": name}
    if owner_name == name:  # the job's own kind: PyTorchJob, a batch or Volcano Job, ...
        attrs |= {"k8s.training_job.kind": owner_kind, "k8s.training_job.api_version": owner_api}
    return attrs


# --- into the graph --------------------------------------------------------------------------
def kubernetes_snapshot(nodes: object, pods: object, at: float,
                        node_labels: Collection[str] = NODE_LABELS) -> InventorySnapshot:
    """What the API's node and pod lists say exists at `at`, as the inventory snapshot the
    collector publishes; ValueError naming the object that is not Kubernetes'."""
    records: dict[str, EntityRecord] = {}
    relations: list[Relation] = []
    for node in items_of(nodes):
        node_id = entity_id(EntityKind.NODE, json_text(json_at(node, "metadata", "name")))
        records[node_id] = EntityRecord(node_id, node_attrs(node, node_labels))
    for pod in items_of(pods):
        if pod_phase(pod) in ENDED_PHASES:
            continue
        record = EntityRecord(pod_id(pod), pod_attrs(pod))
        records[record.id] = record
        if (bound := pod_node(pod)) and (host := entity_id(EntityKind.NODE, bound)) in records:
            relations.append(Relation(record.id, RelationKind.RUNS_ON, host))
        if job_name := pod_job(pod):
            job_id = entity_id(EntityKind.JOB, record.attrs["k8s.namespace.name"], job_name)
            known = records.get(job_id)
            if known is None or "k8s.training_job.kind" not in known.attrs:
                records[job_id] = EntityRecord(job_id, _job_attrs(pod, job_name))
            relations.append(Relation(record.id, RelationKind.MEMBER_OF, job_id))
    return InventorySnapshot(source=SOURCE, at=at, kinds=_KINDS, entities=tuple(records.values()),
                             relations=tuple(relations), manages=_MANAGES)


def apply_kubernetes(topo: Topology | None, nodes: object, pods: object, at: float) -> Topology:
    """Make `topo` (a new Topology if None) agree with the API's node and pod lists at `at`.
    `at` must not precede the previous load of the same graph."""
    topo = Topology() if topo is None else topo
    apply_snapshot(topo, kubernetes_snapshot(nodes, pods, at))
    return topo


# --- from a live cluster ---------------------------------------------------------------------
def core_api(kubeconfig: str | None = None, context: str | None = None) -> client.CoreV1Api:
    """A ``CoreV1Api`` for the cluster: `kubeconfig` if given; else the pod's service account
    when running in one; else ``$KUBECONFIG`` or ``~/.kube/config``, as kubectl does."""
    configuration = client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            _load_incluster_config(client_configuration=configuration)
        else:
            _load_kube_config(config_file=kubeconfig, context=context,
                              client_configuration=configuration, persist_config=False)
    except Exception as exc:  # the loaders raise ConfigException, OSError, YAML errors, ...
        where = kubeconfig or "the in-cluster service account or the default kubeconfig"
        raise KubernetesError(f"no Kubernetes API server from {where}: {exc}") from None
    return client.CoreV1Api(client.ApiClient(configuration))


def list_all(api: client.CoreV1Api, resource: Resource, page_size: int = DEFAULT_PAGE_SIZE,
             timeout_s: float = DEFAULT_TIMEOUT_S) -> list[JsonObject]:
    """Every object of `resource` in the cluster, `page_size` a call, as JSON dicts.

    The raw JSON is read instead of the client's models: building those costs more than the
    call itself on a large cluster. If a continue token expires mid-list (410), the list
    starts again once, as the API asks of clients that need a consistent list."""
    lister: Callable[..., Any] = getattr(api, _LISTERS[resource])
    host = api.api_client.configuration.host
    items: list[JsonObject] = []
    token: str | None = None
    restarted = False
    while True:
        try:
            response = lister(limit=page_size, _continue=token, _preload_content=False,
                              _request_timeout=timeout_s)
            page = json.loads(response.data)
        except client.ApiException as exc:
            if exc.status == 410 and token is not None and not restarted:
                items, token, restarted = [], None, True
                continue
            raise KubernetesError(f"{host}: listing {resource} failed: HTTP {exc.status} "
                                  f"{_status_message(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesError(f"{host}: listing {resource} failed: {exc}") from None
        except ValueError as exc:  # JSON that does not parse, UnicodeDecodeError
            raise KubernetesError(f"{host}: listing {resource}: not JSON: {exc}") from None
        try:
            items += items_of(page)
        except ValueError as exc:
            raise KubernetesError(f"{host}: listing {resource}: {exc}") from None
        token = json_text(json_at(page, "metadata", "continue")) or None
        if token is None:
            return items


def _status_message(exc: client.ApiException) -> str:
    """The message of the ``Status`` object an API error carries, else its HTTP reason."""
    try:
        status = json.loads(exc.body or "")
    except (TypeError, ValueError):
        status = None
    message = json_at(status, "message") if isinstance(status, Mapping) else None
    return json_text(message) or json_text(exc.reason)


def snapshot_kubernetes(at: float, api: client.CoreV1Api | None = None,
                        kubeconfig: str | None = None, context: str | None = None,
                        page_size: int = DEFAULT_PAGE_SIZE,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> InventorySnapshot:
    """List the cluster's nodes and pods now and return them as the snapshot at `at`. `api` is
    a ``CoreV1Api``, or None to connect as `core_api` does; KubernetesError naming the API
    server and the call if it cannot be reached or answers what Kubernetes would not."""
    api = core_api(kubeconfig, context) if api is None else api
    nodes = list_all(api, "nodes", page_size, timeout_s)
    pods = list_all(api, "pods", page_size, timeout_s)
    return kubernetes_snapshot(nodes, pods, at)
