"""`vigil topo …` on the documented example inventory, whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner
from vigil.ui.cli import app

DATA = Path(__file__).parents[1] / "topology" / "data" / "inventory"
SMALL = str(DATA / "small.yaml")
runner = CliRunner()


def _json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_validate_good_and_bad() -> None:
    assert _json("topo", "validate", SMALL) == {"file": SMALL, "valid": True, "problems": []}
    bad = runner.invoke(app, ["topo", "validate", str(DATA / "bad_unknown_leaf.yaml")])
    assert bad.exit_code == 1
    assert "unknown leaf switch 'leaf-9'" in bad.output


def test_blast_radius_of_a_leaf() -> None:
    found = _json("topo", "blast-radius", "switch:leaf-1", "-i", SMALL)
    assert isinstance(found, dict)
    assert found["by_kind"] == {"gpu": 3, "job": 1, "link": 3, "nic": 3, "rank": 2}
    assert "gpu:gpu-b-001/0" in found["entities"]


def test_common_dependencies_of_two_racks_nodes() -> None:
    shared = _json("topo", "common", "node:gpu-a-001", "node:gpu-b-001", "-i", SMALL)
    assert isinstance(shared, list)
    names = [row["entity"] for row in shared]
    assert "switch:leaf-1" in names and "storage:pfs-1" in names
    assert "rack:a" not in names  # different racks


def test_path_crosses_the_rail_and_unknown_entities_are_refused() -> None:
    route = _json("topo", "path", "gpu:gpu-a-001/0", "gpu:gpu-b-001/0", "-i", SMALL)
    assert isinstance(route, dict)
    assert route["path"] == ["gpu:gpu-a-001/0", "nic:gpu-a-001/mlx5_0", "link:leaf-1/p1",
                             "switch:leaf-1", "link:leaf-1/p3", "nic:gpu-b-001/mlx5_0",
                             "gpu:gpu-b-001/0"]
    assert route["hops"] == 6
    missing = runner.invoke(app, ["topo", "path", "gpu:gpu-a-001/0", "gpu:nope/0", "-i", SMALL])
    assert missing.exit_code == 2
    assert "no entity 'gpu:nope/0'" in missing.output


def test_show_lists_attrs_and_relations() -> None:
    shown = _json("topo", "show", "gpu:gpu-a-001/0", "-i", SMALL)
    assert isinstance(shown, dict)
    assert shown["kind"] == "gpu"
    assert shown["attrs"]["pci_bus_id"] == "00000000:18:00.0"
    assert {"src": "gpu:gpu-a-001/0", "kind": "depends_on",
            "dst": "nic:gpu-a-001/mlx5_0"} in shown["relations"]


def test_the_simulators_inventory_validates(tmp_path: Path) -> None:
    import yaml
    from vigil.sim.inventory_export import to_inventory
    from vigil.sim.topology import ClusterSpec, build_topology

    path = tmp_path / "inventory.yaml"
    topo = build_topology(ClusterSpec(racks=2, nodes_per_rack=4, jobs=2))
    path.write_text(yaml.safe_dump(to_inventory(topo)))
    assert _json("topo", "validate", str(path))["valid"] is True  # type: ignore[index]
    radius = _json("topo", "blast-radius", "switch:leaf-1-3", "-i", str(path))
    assert isinstance(radius, dict)
    assert radius["by_kind"]["gpu"] == 8  # GPU 3 of each of the 8 nodes on rail 3


FABRIC = Path(__file__).parents[1] / "topology" / "data" / "fabric"


def test_build_reports_miscabling_and_writes_a_graph_the_others_read(tmp_path: Path) -> None:
    graph = tmp_path / "fabric.pickle"
    built = _json("topo", "build", "-o", str(graph), "-i", str(FABRIC / "inventory.yaml"),
                  "--ibnetdiscover", str(FABRIC / "ibnetdiscover_miscabled.txt"),
                  "--lldp", f"gpu-a-001={FABRIC / 'lldpctl_single.json'}")
    assert isinstance(built, dict)
    assert built["entities"] > 0 and built["relations"] > 0
    [conflict] = [c for c in built["conflicts"] if "gpu-b-001/mlx5_1" in c]
    assert "leaf-1" in conflict
    shown = _json("topo", "show", "nic:gpu-b-001/mlx5_1", "-i", str(graph))
    assert isinstance(shown, dict)
    assert any("leaf-1" in r["src"] or "leaf-1" in r["dst"] for r in shown["relations"])


def test_build_refuses_bad_arguments(tmp_path: Path) -> None:
    wrong = runner.invoke(app, ["topo", "build", "-o", str(tmp_path / "g.yaml")])
    assert wrong.exit_code == 2 and "ends in .pickle" in wrong.output
    lldp = runner.invoke(app, ["topo", "build", "-o", str(tmp_path / "g.pickle"),
                               "--lldp", "just-a-file.json"])
    assert lldp.exit_code == 2 and "HOST=FILE" in lldp.output


def test_at_asks_about_the_past_of_a_graph_file(tmp_path: Path) -> None:
    from vigil.topology.graph import Topology
    from vigil.topology.model import RelationKind

    topo = Topology()
    topo.add_entity("node:n1", {"host.name": "n1"}, at=100.0)
    topo.add_entity("pod:ns/p", {"k8s.pod.name": "p"}, at=100.0)
    topo.add_relation("pod:ns/p", RelationKind.RUNS_ON, "node:n1", at=100.0)
    topo.remove_entity("pod:ns/p", at=200.0)
    graph = tmp_path / "live.pickle"
    topo.save(graph)
    then = _json("topo", "show", "pod:ns/p", "-i", str(graph), "--at", "1970-01-01T00:02:30Z")
    assert isinstance(then, dict)
    assert (then["valid_from"], then["valid_to"]) == (100.0, 200.0)
    assert then["relations"] == [{"src": "pod:ns/p", "kind": "runs_on", "dst": "node:n1"}]
    radius = _json("topo", "blast-radius", "node:n1", "-i", str(graph), "--at", "150")
    assert isinstance(radius, dict) and radius["entities"] == ["pod:ns/p"]
    now = runner.invoke(app, ["topo", "show", "pod:ns/p", "-i", str(graph)])
    assert now.exit_code == 2 and "no entity 'pod:ns/p'" in now.output
    bad = runner.invoke(app, ["topo", "show", "node:n1", "-i", str(graph), "--at", "noon"])
    assert bad.exit_code == 2 and "not unix seconds or an ISO 8601 time" in bad.output


def test_build_from_kubernetes(tmp_path: Path) -> None:
    """`--k8s` through the official client against tests/kube_apiserver.py, which stands in
    for a kube-apiserver (none can be installed here)."""
    from kube_apiserver import TOKEN, running

    for kube in running():
        data = Path(__file__).parents[1] / "topology" / "data" / "k8s"
        for node in json.loads((data / "nodes.json").read_text())["items"]:
            kube.put_node(node)
        for pod in json.loads((data / "pods.json").read_text())["items"]:
            kube.put_pod(pod)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": kube.url}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
        built = _json("topo", "build", "-o", str(tmp_path / "k.pickle"), "--k8s",
                      "--kubeconfig", str(kubeconfig))
        assert isinstance(built, dict) and built["sources"] == ["k8s"]
        assert built["entities"] > 3
