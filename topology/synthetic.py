"""A large, realistic cluster generated straight into a Topology, for the scale benchmark.

Per 8-GPU node: the node, 8 GPUs, 8 rail NICs with their HCA ports, the 8 cables and leaf
ports they plug into, 4 NVSwitch chips and one NVLink bundle per GPU and chip (an H100's 18
links split 5/4/4/5 over the chips), a pod with its container (allocated the 8 GPUs), a
mount of the shared filesystem, and the 8 ranks a job runs there. 12,500 such nodes make a
100k-GPU cluster of about 1.1M entities and 2.05M relations.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigil.topology.graph import Topology
from vigil.topology.model import RelationKind as R

NODES_PER_RACK = 16
NODES_PER_GROUP = 32  # a rail group: its nodes share 8 leaf switches
NODES_PER_JOB = 512
NVSWITCHES = 4
LANES = ("5", "4", "4", "5")  # NVLinks from one H100 to each NVSwitch chip


@dataclass(frozen=True, slots=True)
class SyntheticCluster:
    topology: Topology
    nodes: list[str]
    jobs: list[str]
    leaves: list[str]


def build_cluster(gpus: int, gpus_per_node: int = 8) -> SyntheticCluster:
    """A rail-optimised cluster of `gpus` GPUs (rounded down to whole nodes)."""
    t = Topology()
    add, rel = t.add_entity, t.add_relation
    n_nodes = gpus // gpus_per_node
    add("region:synthetic")
    add("cluster:synthetic")
    rel("region:synthetic", R.CONTAINS, "cluster:synthetic")
    add("partition:gpu")
    add("storage:pfs-1", {"type": "lustre"})
    add("volume:pfs-1/home")
    rel("storage:pfs-1", R.CONTAINS, "volume:pfs-1/home")
    spines = [f"switch:spine-{s + 1}" for s in range(max(2, n_nodes // 256))]
    for spine in spines:
        add(spine, {"tier": "spine"})
    nodes: list[str] = []
    jobs: list[str] = []
    leaves: list[str] = []
    for i in range(n_nodes):
        rack, group, job_no = i // NODES_PER_RACK, i // NODES_PER_GROUP, i // NODES_PER_JOB
        host = f"gpu-{rack:04d}-{i % NODES_PER_RACK:02d}"
        node = f"node:{host}"
        if i % NODES_PER_RACK == 0:
            add(f"power:pdu-{rack:04d}")
            add(f"rack:{rack:04d}")
            rel("cluster:synthetic", R.CONTAINS, f"rack:{rack:04d}")
            rel(f"rack:{rack:04d}", R.DEPENDS_ON, f"power:pdu-{rack:04d}")
        if i % NODES_PER_GROUP == 0:
            for k in range(gpus_per_node):
                leaf = f"switch:leaf-{group + 1}-{k}"
                add(leaf, {"tier": "leaf"})
                leaves.append(leaf)
                for spine in spines:
                    uplink = f"link:{spine.removeprefix('switch:')}/{leaf.removeprefix('switch:')}"
                    add(uplink)
                    rel(spine, R.CONNECTS, uplink)
                    rel(uplink, R.CONNECTS, leaf)
        job = f"job:train-{job_no:03d}"
        if i % NODES_PER_JOB == 0:
            add(job, {"tensor_parallel": "8", "pipeline_parallel": "4"})
            rel(job, R.MOUNTS, "volume:pfs-1/home")
            jobs.append(job)
        add(node, {"host.name": host})
        nodes.append(node)
        rel(f"rack:{rack:04d}", R.CONTAINS, node)
        rel(node, R.MEMBER_OF, "partition:gpu")
        mount = f"mount:{host}/mnt/pfs"
        add(mount)
        rel(node, R.CONTAINS, mount)
        rel(mount, R.MOUNTS, "volume:pfs-1/home")
        chips = [f"nvswitch:{host}/{c}" for c in range(NVSWITCHES)]
        for chip in chips:
            add(chip)
            rel(node, R.CONTAINS, chip)
        pod = f"pod:train/{job.removeprefix('job:')}-worker-{i % NODES_PER_JOB}"
        container = f"container:{pod.removeprefix('pod:')}/trainer"
        add(pod, {"k8s.pod.name": pod.rsplit("/", 1)[1]})
        add(container)
        rel(pod, R.RUNS_ON, node)
        rel(pod, R.CONTAINS, container)
        port_no = i % NODES_PER_GROUP + 1
        for k in range(gpus_per_node):
            gpu, nic = f"gpu:{host}/{k}", f"nic:{host}/mlx5_{k}"
            leaf = f"leaf-{group + 1}-{k}"
            leaf_port, hca_port = f"port:{leaf}/p{port_no}", f"port:{host}/mlx5_{k}/1"
            cable = f"link:{leaf}/p{port_no}"
            add(gpu, {"host.name": host, "gpu": str(k)})
            add(nic, {"host.name": host, "ib.device": f"mlx5_{k}"})
            add(leaf_port)
            add(hca_port)
            add(cable)
            rel(node, R.CONTAINS, gpu)
            rel(node, R.CONTAINS, nic)
            rel(gpu, R.DEPENDS_ON, nic)
            rel(nic, R.DEPENDS_ON, hca_port)  # a NIC is only as up as its port
            rel(f"switch:{leaf}", R.CONTAINS, leaf_port)
            rel(leaf_port, R.CONNECTS, cable)
            rel(cable, R.CONNECTS, hca_port)
            for c, chip in enumerate(chips):
                bundle = f"nvlink:{host}/{k}-{c}"
                add(bundle, {"lanes": LANES[c]})
                rel(chip, R.CONNECTS, bundle)
                rel(bundle, R.CONNECTS, gpu)
            r = (i % NODES_PER_JOB) * gpus_per_node + k
            rank = f"rank:{job.removeprefix('job:')}/{r}"
            add(rank, {"dp": str(r // 32), "pp": str(r // 8 % 4), "tp": str(r % 8)})
            rel(container, R.DEPENDS_ON, gpu)  # the device plugin gave it this GPU
            rel(rank, R.RUNS_ON, gpu)
            rel(rank, R.RUNS_ON, container)
            rel(rank, R.MEMBER_OF, job)
    return SyntheticCluster(t, nodes, jobs, leaves)
