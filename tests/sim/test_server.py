"""Tests for the simulator's HTTP face: metrics, discovery, fault listing and injection."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vigil.diagnosis.library import FaultLibrary
from vigil.sim.clock import SimClock
from vigil.sim.cluster import SimCluster
from vigil.sim.effects import Timing, target_kind
from vigil.sim.server import SimServer
from vigil.sim.telemetry import GPU_FAMILIES
from vigil.sim.topology import ClusterSpec

NODES = ("gpu-a-001", "gpu-a-002")
START = 1_718_000_000.0  # simulated start of the running_server fixture


@pytest.fixture
def served(sim_server: SimServer) -> Iterator[SimCluster]:
    """The cluster behind the module's server, healed after each test that broke something."""
    yield sim_server.cluster
    sim_server.cluster.heal_all(sim_server.clock.now())


@pytest.fixture(scope="module")
def client(sim_server: SimServer) -> Iterator[httpx.Client]:
    # One client for the module: building one (its TLS context) costs ~0.1 s.
    # trust_env=False: a proxy configured in the environment must not see loopback requests.
    with httpx.Client(base_url=sim_server.url, trust_env=False, timeout=5.0) as http:
        yield http


@pytest.fixture(scope="module")
def running_server(
    library: FaultLibrary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimServer]:
    """Three nodes, two one-node jobs (gpu-a-003 has none), on a clock 500x real time that
    steps every 5 simulated seconds (10 ms of wall time)."""
    cluster = SimCluster(library, tmp_path_factory.mktemp("running"), now=START,
                         spec=ClusterSpec(racks=1, nodes_per_rack=3, jobs=2))
    server = SimServer(cluster, "127.0.0.1", 0, interval_s=5.0,
                       clock=SimClock(speed=500.0, origin=START))
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


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
    assert [f.name for f in families] == [m for m, *_ in GPU_FAMILIES]
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


def test_node_exporter_and_trainer_serve_their_expositions(
    client: httpx.Client, served: SimCluster
) -> None:
    for path, text in (("node-exporter", served.node_exporter("gpu-a-001")),
                       ("trainer", served.trainer("gpu-a-001"))):
        response = client.get(f"/nodes/gpu-a-001/{path}/metrics")

        assert response.status_code == 200, path
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert response.text == text
    names = {f.name for f in text_string_to_metric_families(
        client.get("/nodes/gpu-a-002/trainer/metrics").text)}
    assert "training_step_time_seconds" in names


def test_storage_serves_each_systems_exposition(client: httpx.Client, served: SimCluster) -> None:
    for system in ("pfs-1", "obj-1"):
        response = client.get(f"/storage/{system}/metrics")

        assert response.status_code == 200
        assert response.text == served.storage(system)
        assert f'system="{system}"' in response.text


@pytest.mark.parametrize(
    ("path", "error"),
    [("/storage/nfs-9/metrics", "no storage system 'nfs-9'"),
     ("/nodes/gpu-a-001/bogus/metrics", "no exporter 'bogus'"),
     ("/nodes/gpu-z-999/node-exporter/metrics", "no node 'gpu-z-999'")],
)
def test_an_unknown_system_node_or_exporter_is_404(
    client: httpx.Client, path: str, error: str
) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert response.json() == {"error": error}


def test_trainer_of_a_crashed_job_is_404(client: httpx.Client, served: SimCluster) -> None:
    injected = client.post("/inject", json={"fault": "gpu.xid.13", "target": "gpu:gpu-a-001/0"})
    assert client.get("/nodes/gpu-a-002/trainer/metrics").status_code == 200

    served.step(injected.json()["injected_at"] + Timing().crash_propagation_s + 1)

    for node in NODES:
        response = client.get(f"/nodes/{node}/trainer/metrics")
        assert response.status_code == 404
        assert response.json() == {"error": f"no training process on {node}"}
        assert client.get(f"/nodes/{node}/metrics").status_code == 200


def test_an_unreachable_node_answers_503_on_every_endpoint(
    client: httpx.Client, served: SimCluster
) -> None:
    response = client.post("/inject", json={"fault": "sched.slurm.node_not_responding",
                                            "target": "node:gpu-a-002"})
    assert response.status_code == 200

    for exporter in ("", "node-exporter/", "trainer/"):
        response = client.get(f"/nodes/gpu-a-002/{exporter}metrics")
        assert response.status_code == 503, exporter
        assert response.json() == {"error": "gpu-a-002 does not answer"}
        assert client.get(f"/nodes/gpu-a-001/{exporter}metrics").status_code == 200, exporter


def test_targets_lists_every_exporter_and_log(client: httpx.Client, served: SimCluster) -> None:
    response = client.get("/targets")

    assert response.status_code == 200
    body = response.json()
    assert body["nodes"] == [
        {"node": name, "metrics_path": f"/nodes/{name}/metrics",
         "exporters": {"dcgm": f"/nodes/{name}/metrics",
                       "node_exporter": f"/nodes/{name}/node-exporter/metrics",
                       "trainer": f"/nodes/{name}/trainer/metrics"},
         "logs": {"kernel": str(served.nodes[name].kernel_log),
                  "training": str(served.nodes[name].training_log)}}
        for name in NODES
    ]
    assert body["storage"] == [{"system": s, "metrics_path": f"/storage/{s}/metrics"}
                               for s in ("pfs-1", "obj-1")]
    assert body["logs"] == [{"path": str(path), "host": host, "source": source}
                            for path, host, source in served.log_files()]
    assert {(e["host"], e["source"]) for e in body["logs"]} == {
        (n, s) for n in NODES for s in ("kernel", "training")} | {("slurm-ctl", "scheduler")}
    for node in body["nodes"]:
        for path in node["exporters"].values():
            assert client.get(path).status_code == 200, path
    for system in body["storage"]:
        assert client.get(system["metrics_path"]).status_code == 200
    assert all(Path(e["path"]).is_file() for e in body["logs"])


def test_targets_leave_out_the_trainer_of_a_node_without_a_job(
    running_server: SimServer,
) -> None:
    with httpx.Client(base_url=running_server.url, trust_env=False, timeout=5.0) as http:
        nodes = http.get("/targets").json()["nodes"]
        idle = http.get("/nodes/gpu-a-003/trainer/metrics")

    assert [sorted(n["exporters"]) for n in nodes] == [
        ["dcgm", "node_exporter", "trainer"], ["dcgm", "node_exporter", "trainer"],
        ["dcgm", "node_exporter"]]
    assert idle.status_code == 404
    assert idle.json() == {"error": "no training process on gpu-a-003"}


def test_the_clock_thread_steps_the_cluster(running_server: SimServer) -> None:
    cluster = running_server.cluster
    deadline = time.monotonic() + 5
    while cluster.tel.now < START + 60 and time.monotonic() < deadline:
        time.sleep(0.01)

    # 60 simulated seconds pass in about 0.12 wall seconds at 500x.
    assert cluster.tel.now >= START + 60
    assert cluster.tel.now <= running_server.clock.now()
    assert cluster.tel.iteration[0] > 0


def test_faults_lists_injectable_modes_with_layer_and_target_kind(
    client: httpx.Client, served: SimCluster, library: FaultLibrary
) -> None:
    response = client.get("/faults")

    assert response.status_code == 200
    body = response.json()
    assert body["targets"] == served.entities()
    xid79 = library.get("gpu.xid.79")
    assert {"id": xid79.id, "title": xid79.title, "layer": "compute", "component": "gpu",
            "target": "gpu"} in body["faults"]
    assert [f["id"] for f in body["faults"]] == [m.id for m in served.injectable()]
    kinds = {f["id"]: f["target"] for f in body["faults"]}
    assert kinds["net.ib.link_down"] == "nic"
    assert kinds["net.ib.port_errors"] == "switch"
    assert kinds["storage.slow_io"] == "storage"
    assert kinds["job.cuda_oom"] == "job"
    assert kinds["host.oom_kill"] == "node"
    for fault in body["faults"]:
        mode = library.get(fault["id"])
        assert (fault["layer"], fault["target"]) == (mode.layer, target_kind(mode))


def test_inject_returns_the_injection_and_writes_the_log(
    client: httpx.Client, served: SimCluster, sim_server: SimServer
) -> None:
    log = served.nodes["gpu-a-001"].kernel_log
    logged_before = log.read_text()
    sent_at = sim_server.clock.now()
    response = client.post("/inject", json={"fault": "gpu.xid.79", "target": "gpu:gpu-a-001/5"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"fault_id", "target", "injected_at", "log_line"}
    assert (body["fault_id"], body["target"]) == ("gpu.xid.79", "gpu:gpu-a-001/5")
    # Stamped by the server's simulated clock, not the wall clock.
    assert sent_at <= body["injected_at"] <= sim_server.clock.now()
    assert "NVRM: Xid (PCI:0000:ab:00): 79" in body["log_line"]
    assert log.read_text() == logged_before + body["log_line"] + "\n"
    metrics = client.get("/nodes/gpu-a-001/metrics").text
    assert 'gpu="5"' not in metrics


def test_inject_honours_the_duration(client: httpx.Client, served: SimCluster) -> None:
    response = client.post("/inject", json={"fault": "gpu.xid.79", "target": "gpu:gpu-a-002/1",
                                            "duration_s": 5})
    assert response.status_code == 200
    assert 'gpu="1"' not in client.get("/nodes/gpu-a-002/metrics").text

    served.step(response.json()["injected_at"] + 5)

    assert 'gpu="1"' in client.get("/nodes/gpu-a-002/metrics").text


@pytest.mark.parametrize("duration", [0, -5, "60", None])
def test_inject_with_a_bad_duration_is_422(
    client: httpx.Client, served: SimCluster, duration: object
) -> None:
    logged_before = served.nodes["gpu-a-001"].kernel_log.read_text()

    response = client.post("/inject", json={"fault": "gpu.xid.79", "target": "gpu:gpu-a-001/0",
                                            "duration_s": duration})

    assert response.status_code == 422
    assert response.json() == {"error": "field 'duration_s' must be a positive number"}
    assert served.nodes["gpu-a-001"].kernel_log.read_text() == logged_before


def test_inject_at_a_target_of_the_wrong_kind_is_422(client: httpx.Client) -> None:
    response = client.post("/inject", json={"fault": "net.ib.link_down",
                                            "target": "node:gpu-a-001"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("unknown target 'node:gpu-a-001'; net.ib.link_down is injected "
                            "at a nic, one of: nic:gpu-a-001/mlx5_0, ")


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
     ("GET", "/nodes/gpu-a-001/metrics/extra"), ("GET", "/storage/pfs-1"),
     ("GET", "/storage/pfs-1/metrics/extra"), ("GET", "/inject"), ("POST", "/faults"),
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



def test_events_are_a_resumable_stream(client: httpx.Client, served: SimCluster) -> None:
    """A crashed job's pods and an unreachable node show up as Kubernetes-style events."""
    start = served.events.last_seq
    served.inject("sched.slurm.node_not_responding", "node:gpu-a-002", served.tel.now)
    served.step(served.tel.now + served.ctx.timing.nccl_timeout_s + 1)
    response = client.get("/events", params={"since": start})
    assert response.status_code == 200
    events = [json.loads(line) for line in response.text.splitlines()]
    assert [(e["kind"], e["reason"]) for e in events][:1] == [("Node", "NodeNotReady")]
    assert {e["reason"] for e in events if e["kind"] == "Pod"} == {"Failed"}
    last = events[-1]["seq"]
    assert client.get("/events", params={"since": last}).text == ""
    served.heal_all(served.tel.now)
    after = client.get("/events", params={"since": last}).text.splitlines()
    assert {json.loads(x)["reason"] for x in after} == {"NodeReady", "Started"}
    assert client.get("/events", params={"since": "yesterday"}).status_code == 400
