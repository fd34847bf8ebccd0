"""EntityResolver: exporters' labels to topology ids, with and without a graph."""

from __future__ import annotations

from vigil.topology.graph import Topology
from vigil.topology.identity import EntityResolver


def graph() -> Topology:
    topo = Topology()
    topo.add_entity("node:gpu-a-001", {"host.name": "gpu-a-001"})
    # The inventory numbers this GPU 5; the exporter's index for it is 2.
    topo.add_entity("gpu:gpu-a-001/5", {"UUID": "GPU-abc", "pci_bus_id": "0000:9a:00.0",
                                        "host.name": "gpu-a-001"})
    topo.add_entity("nic:gpu-a-001/rail3", {"ib.device": "mlx5_3", "host.name": "gpu-a-001"})
    return topo


def test_without_a_graph_ids_are_built_as_the_inventory_does() -> None:
    resolve = EntityResolver().resolve
    assert resolve("n1", {"gpu": "3", "UUID": "GPU-x"}, "DCGM_FI_DEV_GPU_TEMP") == "gpu:n1/3"
    assert resolve("n1", {"device": "mlx5_0", "port": "1"},
                   "node_infiniband_port_data_received_bytes_total") == "nic:n1/mlx5_0"
    assert resolve("n1", {"device": "sda"}, "node_disk_read_bytes_total") == "node:n1"
    assert resolve("n1", {"k8s.namespace.name": "train", "k8s.pod.name": "w-0"}) == "pod:train/w-0"
    assert resolve("n1", {"vigil.entity": "switch:leaf-1"}) == "switch:leaf-1"
    assert resolve("n1", {}) == "node:n1"


def test_with_a_graph_its_indices_win() -> None:
    resolve = EntityResolver(graph()).resolve
    assert resolve("gpu-a-001", {"gpu": "2", "UUID": "GPU-abc"}) == "gpu:gpu-a-001/5"
    assert resolve("gpu-a-001", {"gpu": "2", "pci_bus_id": "00000000:9A:00.0"}) == \
        "gpu:gpu-a-001/5"
    assert resolve("gpu-a-001", {"device": "mlx5_3"}, "node_infiniband_port_state_id") == \
        "nic:gpu-a-001/rail3"
    assert resolve("gpu-a-001", {"gpu": "7", "UUID": "GPU-unknown"}) == "gpu:gpu-a-001/7"


def test_answers_are_cached_per_label_set() -> None:
    resolver = EntityResolver(graph())
    labels = {"gpu": "2", "UUID": "GPU-abc"}
    assert resolver.resolve("gpu-a-001", labels) == "gpu:gpu-a-001/5"
    resolver.topo = None  # a cached answer does not ask again
    assert resolver.resolve("gpu-a-001", labels) == "gpu:gpu-a-001/5"
