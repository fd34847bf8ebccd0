"""The simulated cluster's shape: racks, nodes, GPUs, rail-optimised NICs, switches, storage, jobs.

Generated from a few parameters and a seed. Ids follow DESIGN.md (`node:gpu-a-001`,
`gpu:gpu-a-001/3`, `nic:gpu-a-001/mlx5_3`, `switch:leaf-1-3`, `link:leaf-1-3/p5`,
`storage:pfs-1`, `job:llm-70b-01`, `rank:llm-70b-01/17`, `pod:train/llm-70b-01-worker-2`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# PCI bus ids of the eight GPUs and eight ConnectX NICs on an HGX H100 node (DGX H100 layout).
GPU_PCI = ("00000000:18:00.0", "00000000:2A:00.0", "00000000:3A:00.0", "00000000:5D:00.0",
           "00000000:9A:00.0", "00000000:AB:00.0", "00000000:BA:00.0", "00000000:DB:00.0",
           "00000000:1B:00.0", "00000000:2C:00.0", "00000000:3C:00.0", "00000000:5F:00.0",
           "00000000:9C:00.0", "00000000:AD:00.0", "00000000:BC:00.0", "00000000:DD:00.0")
NIC_PCI = ("0000:1a:00.0", "0000:3c:00.0", "0000:4d:00.0", "0000:5e:00.0",
           "0000:9c:00.0", "0000:bc:00.0", "0000:cc:00.0", "0000:dc:00.0",
           "0000:1c:00.0", "0000:3e:00.0", "0000:4f:00.0", "0000:60:00.0",
           "0000:9e:00.0", "0000:be:00.0", "0000:ce:00.0", "0000:de:00.0")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    racks: int = 1
    nodes_per_rack: int = 4
    gpus_per_node: int = 8
    nics_per_node: int = 8
    nodes_per_group: int = 32  # a rail group ("scalable unit"): its nodes share 8 leaf switches
    spines: int = 4
    jobs: int = 1  # training jobs; each takes an equal share of the nodes
    seed: int = 7

    @property
    def nodes(self) -> int:
        return self.racks * self.nodes_per_rack


@dataclass(frozen=True, slots=True)
class Job:
    name: str  # e.g. "llm-70b-01"
    nodes: tuple[str, ...]
    tensor_parallel: int  # ranks per TP group (within a node)
    pipeline_parallel: int  # stages, across nodes
    storage: str  # where it checkpoints, e.g. "pfs-1"
    gpus_per_node: int = 8  # one rank per GPU

    @property
    def ranks(self) -> int:
        return len(self.nodes) * self.gpus_per_node

    @property
    def data_parallel(self) -> int:
        return max(1, self.ranks // (self.tensor_parallel * self.pipeline_parallel))

    @property
    def id(self) -> str:
        return f"job:{self.name}"

    def pod(self, node: str) -> str:
        """The Kubernetes-style pod that runs this job's ranks on `node`."""
        return f"pod:train/{self.name}-worker-{self.nodes.index(node)}"

    def parallel_groups(self, rank: int) -> tuple[int, int, int]:
        """(data, pipeline, tensor) parallel coordinates of `rank`, Megatron's layout:
        tensor-parallel ranks are adjacent (one node), pipeline stages next, data outermost."""
        tp, pp = self.tensor_parallel, self.pipeline_parallel
        return rank // (tp * pp), (rank // tp) % pp, rank % tp


@dataclass
class SimTopology:
    spec: ClusterSpec
    nodes: list[str]
    racks: list[str]
    rack_of: dict[str, str]
    group_of: dict[str, int]  # node -> rail group
    storage: list[str]  # "pfs-1" (parallel filesystem), "obj-1" (object store)
    jobs: list[Job]
    job_of: dict[str, str] = field(default_factory=dict)  # node -> job name
    index: dict[str, int] = field(default_factory=dict)  # node -> row in telemetry arrays

    # --- ids ---------------------------------------------------------------------------
    def leaf(self, node: str, rail: int) -> str:
        return f"switch:leaf-{self.group_of[node] + 1}-{rail}"

    def link(self, node: str, rail: int) -> str:
        """The cable from the node's NIC `rail` to its leaf; port = position in the group."""
        port = self.index[node] % self.spec.nodes_per_group + 1
        return f"link:leaf-{self.group_of[node] + 1}-{rail}/p{port}"

    def nodes_on_leaf(self, switch: str) -> tuple[list[str], int]:
        """The nodes cabled to leaf `switch:leaf-G-R`, and the rail R they use."""
        group, rail = (int(x) for x in switch.removeprefix("switch:leaf-").split("-"))
        return [n for n in self.nodes if self.group_of[n] == group - 1], rail

    def job(self, name: str) -> Job:
        return next(j for j in self.jobs if j.name == name)

    def ranks_on(self, node: str) -> list[str]:
        name = self.job_of.get(node)
        if name is None:
            return []
        job = self.job(name)
        first = job.nodes.index(node) * job.gpus_per_node
        return [f"rank:{name}/{r}" for r in range(first, first + job.gpus_per_node)]

    def entities(self) -> list[str]:
        """Every entity a fault may be injected at."""
        out: list[str] = []
        for node in self.nodes:
            out.append(f"node:{node}")
            out += [f"gpu:{node}/{g}" for g in range(self.spec.gpus_per_node)]
            out += [f"nic:{node}/mlx5_{k}" for k in range(self.spec.nics_per_node)]
        groups = sorted(set(self.group_of.values()))
        out += [f"switch:leaf-{g + 1}-{r}" for g in groups for r in range(self.spec.nics_per_node)]
        out += [f"storage:{s}" for s in self.storage]
        out += [j.id for j in self.jobs]
        return out

    def pods(self) -> list[str]:
        return [job.pod(node) for job in self.jobs for node in job.nodes]


def rack_name(i: int) -> str:
    """a, b, …, z, aa, ab, … like spreadsheet columns."""
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(ord("a") + r) + name
    return name


def build_topology(spec: ClusterSpec) -> SimTopology:
    rng = np.random.default_rng(spec.seed)
    nodes, rack_of = [], {}
    for r in range(spec.racks):
        rack = rack_name(r)
        for i in range(spec.nodes_per_rack):
            name = f"gpu-{rack}-{i + 1:03d}"
            nodes.append(name)
            rack_of[name] = rack
    index = {n: i for i, n in enumerate(nodes)}
    group_of = {n: i // spec.nodes_per_group for i, n in enumerate(nodes)}
    storage = ["pfs-1", "obj-1"]
    jobs: list[Job] = []
    job_of: dict[str, str] = {}
    per_job = max(1, len(nodes) // max(1, spec.jobs))
    sizes = ("8b", "70b", "405b")
    for j in range(min(spec.jobs, len(nodes))):
        members = tuple(nodes[j * per_job:(j + 1) * per_job])
        pp = 1 if len(members) < 4 else int(rng.choice([2, 4]))
        job = Job(name=f"llm-{sizes[j % 3]}-{j + 1:02d}", nodes=members,
                  tensor_parallel=spec.gpus_per_node, pipeline_parallel=pp, storage="pfs-1",
                  gpus_per_node=spec.gpus_per_node)
        jobs.append(job)
        job_of.update({n: job.name for n in members})
    return SimTopology(spec=spec, nodes=nodes, racks=[rack_name(r) for r in range(spec.racks)],
                       rack_of=rack_of, group_of=group_of, storage=storage, jobs=jobs,
                       job_of=job_of, index=index)
