"""The simulated cluster written as an inventory file, the format `vigil.topology` loads."""

from __future__ import annotations

from typing import Any

from vigil.sim.telemetry import gpu_uuid
from vigil.sim.topology import GPU_PCI, SimTopology


def to_inventory(topo: SimTopology, name: str = "sim-1") -> dict[str, Any]:
    """A dict in the documented inventory format (topology/README.md), ready for YAML/JSON."""
    spec = topo.spec
    spines = [f"spine-{s + 1}" for s in range(spec.spines)]
    groups = sorted(set(topo.group_of.values()))
    leaves = [f"leaf-{g + 1}-{r}" for g in groups for r in range(spec.nics_per_node)]
    racks: list[dict[str, Any]] = []
    for rack in topo.racks:
        nodes = []
        for node in (n for n in topo.nodes if topo.rack_of[n] == rack):
            nodes.append({
                "name": node,
                "partition": "gpu",
                "gpus": [{"index": g, "uuid": gpu_uuid(node, g), "pci_bus_id": GPU_PCI[g]}
                         for g in range(spec.gpus_per_node)],
                "nics": [{"name": f"mlx5_{k}", "rail": k,
                          "leaf": topo.leaf(node, k).removeprefix("switch:"),
                          "port": topo.link(node, k).rsplit("/", 1)[1]}
                         for k in range(spec.nics_per_node)],
            })
        racks.append({"name": rack, "power": f"pdu-{rack}", "nodes": nodes})
    return {
        "cluster": {"name": name},
        "power": [{"name": f"pdu-{rack}"} for rack in topo.racks],
        "switches": [{"name": s, "tier": "spine"} for s in spines]
        + [{"name": leaf, "tier": "leaf", "uplinks": spines} for leaf in leaves],
        "racks": racks,
        "storage": [
            {"name": "pfs-1", "type": "lustre",
             "volumes": [{"name": "home", "mounted_by": ["*"]}]},
            {"name": "obj-1", "type": "s3", "volumes": [{"name": "checkpoints"}]},
        ],
        "jobs": [{"name": job.name, "nodes": list(job.nodes),
                  "ranks_per_node": job.gpus_per_node,
                  "tensor_parallel": job.tensor_parallel,
                  "pipeline_parallel": job.pipeline_parallel,
                  "volume": f"{job.storage}/home"}
                 for job in topo.jobs],
    }
