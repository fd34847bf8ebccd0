"""Tests for the simulator's HTTP face: metrics, discovery, fault listing and injection."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vigil.diagnosis.library import FaultLibrary
from vigil.sim.cluster import GPU_METRICS, SimCluster
from vigil.sim.server import SimServer


@pytest.fixture
def served(sim_server: SimServer) -> SimCluster:
    """The cluster behind the module's server; other tests in this module may have injected."""
    return sim_server.cluster


@pytest.fixture
def client(sim_server: SimServer) -> Iterator[httpx.Client]:
    # trust_env=False: a proxy configured in the environment must not see loopback requests.
    with httpx.Client(base_url=sim_server.url, trust_env=False, timeout=5.0) as http:
        yield http


def test_url_is_the_bound_loopback_port(sim_server: SimServer) -> None:
    host, _, port = sim_server.url.removeprefix("http://").partition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0


def test_metrics_serves_the_node_exposition(client: httpx.Client, served: SimCluster) -> None:
    response = client.get("/nodes/gpu-a-002/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.text == served.exposition("gpu-a-002")
    families = list(text_string_to_metric_families(response.text))
    assert [f.name for f in families] == [m for m, _, _ in GPU_METRICS]
    assert {s.labels["Hostname"] for f in families for s in f.samples} == {"gpu-a-002"}


def test_metrics_follow_the_cluster_clock(client: httpx.Client, served: SimCluster) -> None:
    before = client.get("/nodes/gpu-a-001/metrics").text
    served.step(1_718_000_015.0)

    after = client.get("/nodes/gpu-a-001/metrics").text
    assert after != before
    assert after == served.exposition("gpu-a-001")


def test_metrics_of_an_unknown_node_is_404(client: httpx.Client) -> None:
    response = client.get("/nodes/gpu-z-999/metrics")

    assert response.status_code == 404
    assert response.json() == {"error": "no node 'gpu-z-999'"}


def test_targets_lists_every_node_with_its_metrics_path_and_log(
    client: httpx.Client, served: SimCluster
) -> None:
    response = client.get("/targets")

    assert response.status_code == 200
    assert response.json() == {"nodes": [
        {"node": name, "metrics_path": f"/nodes/{name}/metrics",
         "logs": {"kernel": str(served.nodes[name].kernel_log)}}
        for name in ("gpu-a-001", "gpu-a-002")
    ]}
    for target in response.json()["nodes"]:
        assert client.get(target["metrics_path"]).status_code == 200


def test_faults_lists_injectable_modes_and_targets(
    client: httpx.Client, served: SimCluster, library: FaultLibrary
) -> None:
    response = client.get("/faults")

    assert response.status_code == 200
    body = response.json()
    assert body["targets"] == served.entities()
    xid79 = library.get("gpu.xid.79")
    assert {"id": xid79.id, "title": xid79.title, "component": "gpu"} in body["faults"]
    assert sorted(f["id"] for f in body["faults"]) == sorted(m.id for m in served.injectable())


def test_inject_returns_the_injection_and_writes_the_log(
    client: httpx.Client, served: SimCluster
) -> None:
    log = served.nodes["gpu-a-001"].kernel_log
    logged_before = log.read_text()
    sent_at = time.time()
    response = client.post("/inject", json={"fault": "gpu.xid.79", "target": "gpu:gpu-a-001/5"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"fault_id", "target", "injected_at", "log_line"}
    assert (body["fault_id"], body["target"]) == ("gpu.xid.79", "gpu:gpu-a-001/5")
    assert sent_at - 1 <= body["injected_at"] <= time.time() + 1
    assert "NVRM: Xid (PCI:0000:ab:00): 79" in body["log_line"]
    assert log.read_text() == logged_before + body["log_line"] + "\n"
    served = client.get("/nodes/gpu-a-001/metrics").text
    assert 'gpu="5"' not in served


@pytest.mark.parametrize("body", [b"{not json", b'{"fault": "gpu.xid.79",', b"\xff\xfe"])
def test_inject_with_a_body_that_is_not_json_is_400(client: httpx.Client, body: bytes) -> None:
    response = client.post("/inject", content=body,
                           headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not JSON: ")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": "gpu:gpu-a-001/0"}, "fault"),
        ({"fault": "gpu.xid.79"}, "target"),
        ({"fault": 79, "target": "gpu:gpu-a-001/0"}, "fault"),
        ({"fault": "gpu.xid.79", "target": None}, "target"),
        ([], "fault"),
        ("gpu.xid.79", "fault"),
    ],
)
def test_inject_without_a_required_field_is_422_naming_it(
    client: httpx.Client, served: SimCluster, body: object, field: str
) -> None:
    logs = [node.kernel_log for node in served.nodes.values()]
    logged_before = [log.read_text() for log in logs]

    response = client.post("/inject", json=body)

    assert response.status_code == 422
    assert response.json() == {"error": f"field {field!r} is required (a string)"}
    assert [log.read_text() for log in logs] == logged_before


def test_inject_with_no_body_is_422(client: httpx.Client) -> None:
    response = client.post("/inject")

    assert response.status_code == 422
    assert "'fault'" in response.json()["error"]


def test_inject_an_unknown_fault_is_422_listing_the_valid_ones(
    client: httpx.Client, served: SimCluster
) -> None:
    response = client.post("/inject", json={"fault": "gpu.xid.1", "target": "gpu:gpu-a-001/0"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("unknown fault 'gpu.xid.1'; valid faults: ")
    listed = error.split("valid faults: ")[1].split(", ")
    assert listed == sorted(m.id for m in served.injectable())


def test_inject_an_unknown_target_is_422_listing_the_valid_ones(client: httpx.Client) -> None:
    response = client.post("/inject", json={"fault": "gpu.xid.79", "target": "gpu:gpu-a-001/9"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("unknown target 'gpu:gpu-a-001/9'")
    assert "gpu:gpu-a-002/7" in error


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/nodes"), ("GET", "/nodes/gpu-a-001"),
     ("GET", "/nodes/gpu-a-001/metrics/extra"), ("GET", "/inject"), ("POST", "/faults"),
     ("POST", "/inject/now")],
)
def test_unknown_path_is_404(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, json={})

    assert response.status_code == 404
    assert response.json() == {"error": f"no such path {path!r}"}


def test_shutdown_without_start_releases_the_port(cluster: SimCluster) -> None:
    server = SimServer(cluster, "127.0.0.1", 0, interval_s=3600.0)
    url = server.url

    server.shutdown()

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/targets", trust_env=False, timeout=2.0)
