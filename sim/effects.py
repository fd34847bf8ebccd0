"""How each fault plays out in the simulated cluster, and what it touches (the ground truth).

An effect changes telemetry, writes the log lines the real system would, and schedules the
consequences that follow in real clusters: a dead GPU's peers time out in NCCL, a flapping
port slows every job crossing it, a slow filesystem stretches every checkpoint. The
simulator reads only the fault library's facts (ids, layers, example log lines), never the
detectors, so this ground truth stays independent of what is measured.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vigil.diagnosis.library import EXAMPLE_VALUES, FaultMode
from vigil.sim.events import EventLog
from vigil.sim.logs import KERNEL, SCHEDULER, TRAINING, LogWriter
from vigil.sim.telemetry import ACTIVE, DOWN, Telemetry
from vigil.sim.topology import GPU_PCI, NIC_PCI, SimTopology

CONTROLLER = "slurm-ctl"  # the host whose slurmctld.log carries scheduler events
FATAL_XIDS = {13, 31, 48, 64, 74, 79, 94, 95, 119}  # the process on the GPU dies


@dataclass(frozen=True, slots=True)
class Timing:
    """How long consequences take, in simulated seconds. Real defaults are longer (PyTorch's
    NCCL watchdog waits 10 min, slurmd is declared dead after 5 min); shortened so that a
    benchmark scenario fits in a minute, and the same for every run."""

    nccl_timeout_s: float = 30.0
    ib_transport_timeout_s: float = 7.0  # ~7 s, as Databricks reports for IB retry exhaustion
    crash_propagation_s: float = 2.0
    slurmd_timeout_s: float = 45.0
    hung_task_s: float = 40.0


class Scheduler(Protocol):
    def at(self, when: float, action: Callable[[float], None]) -> None: ...


@dataclass
class Affected:
    entities: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)

    def add_node(self, topo: SimTopology, node: str, with_job: bool = True) -> None:
        self.entities.add(f"node:{node}")
        self.nodes.add(node)
        if with_job and node in topo.job_of:
            job = topo.job(topo.job_of[node])
            self.entities.update((job.id, job.pod(node)))
            self.entities.update(topo.ranks_on(node))


@dataclass
class Context:
    """What an effect may touch."""

    topo: SimTopology
    tel: Telemetry
    logs: LogWriter
    schedule: Scheduler
    timing: Timing
    pids: itertools.count[int]
    events: EventLog

    def line(self, mode: FaultMode, host: str, source: str, now: float, **fill: object) -> str:
        assert mode.example is not None
        row = self.topo.index.get(host, 0)
        # The library's example values fill what this cluster has no value of its own for
        # (a DCGM diagnostic's GPU index, a mount point): a line never keeps a "{gpu}".
        values: dict[str, object] = {**EXAMPLE_VALUES, "pid": next(self.pids), "node": host,
                                     "port": 1, "iteration": int(self.tel.iteration[row])}
        values.update(fill)
        return self.logs.write(host, source, now, mode.example.format_map(_Missing(values)))


class _Missing(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Effect:
    """Start a fault, heal it. The default writes the mode's example line at the target."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        node = _node_of(ctx.topo, target)
        affected = Affected(entities={target})
        affected.add_node(ctx.topo, node)
        source = {"job": TRAINING, "scheduler": SCHEDULER}.get(mode.layer, KERNEL)
        ctx.line(mode, CONTROLLER if source == SCHEDULER else node, source, now)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        """Undo what `start` changed (the repair crew did its job)."""


class GpuXid(Effect):
    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        node, gpu = _gpu_of(target)
        i = ctx.topo.index[node]
        ctx.line(mode, node, KERNEL, now, pci=_xid_pci(GPU_PCI[gpu]), gpu=gpu)
        tel = ctx.tel
        tel.xid[i, gpu] = mode.xid or 0
        if mode.xid == 48:
            tel.ecc_dbe[i, gpu] += 1
        if mode.xid == 92:
            tel.ecc_sbe[i, gpu] += 500
        affected = Affected(entities={target})
        affected.add_node(ctx.topo, node)
        if mode.xid in FATAL_XIDS:
            tel.gpu_idle[i, gpu] = True
            if mode.xid == 79:
                tel.gpu_lost[i, gpu] = True  # dcgm-exporter stops reporting it
                # The GPU hangs rather than erroring: peers wait out the NCCL watchdog.
                _fail_job(ctx, node, now + ctx.timing.nccl_timeout_s, "timeout", affected)
            else:
                _fail_job(ctx, node, now + ctx.timing.crash_propagation_s, "remote", affected)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        node, gpu = _gpu_of(target)
        i = ctx.topo.index[node]
        ctx.tel.gpu_lost[i, gpu] = ctx.tel.gpu_idle[i, gpu] = False
        ctx.tel.xid[i, gpu] = 0
        _restart_job(ctx, node)


class HostFault(Effect):
    """Kernel-reported host faults; a hung or dead host takes its job's ranks with it."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        affected = super().start(ctx, mode, target, now)
        node = _node_of(ctx.topo, target)
        if mode.id in ("host.soft_lockup", "host.edac_ue", "host.hung_task"):
            _fail_job(ctx, node, now + ctx.timing.nccl_timeout_s, "timeout", affected)
        elif mode.id == "host.oom_kill":
            _fail_job(ctx, node, now + ctx.timing.crash_propagation_s, "remote", affected)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        _restart_job(ctx, _node_of(ctx.topo, target))


class NicDown(Effect):
    """An RDMA port goes down: the kernel says so, the counter rises, NCCL on it fails."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        node, nic = _nic_of(target)
        i = ctx.topo.index[node]
        ctx.tel.port_state[i, nic] = DOWN
        ctx.tel.link_downed[i, nic] += 1
        ctx.line(mode, node, KERNEL, now, nic_pci=NIC_PCI[nic], ibdev=f"mlx5_{nic}",
                 netdev=f"ib{nic}")
        affected = Affected(entities={target, ctx.topo.link(node, nic), ctx.topo.leaf(node, nic)})
        affected.add_node(ctx.topo, node)
        _fail_job(ctx, node, now + ctx.timing.ib_transport_timeout_s, "remote", affected)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        node, nic = _nic_of(target)
        ctx.tel.port_state[ctx.topo.index[node], nic] = ACTIVE
        _restart_job(ctx, node)


class SwitchPortErrors(Effect):
    """A leaf switch (or one of its cables) corrupts packets: symbol errors and link
    recoveries rise on every port behind it, and every job crossing it slows down."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        nodes, rail = self._ports(ctx, target)
        affected = Affected(entities={target})
        for node in nodes:
            i = ctx.topo.index[node]
            ctx.tel.nic_error_rate[i, rail] = 40.0
            ctx.tel.slowdown[i] = max(ctx.tel.slowdown[i], 1.15)
            affected.entities.add(f"nic:{node}/mlx5_{rail}")
            affected.add_node(ctx.topo, node)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        nodes, rail = self._ports(ctx, target)
        rows = [ctx.topo.index[n] for n in nodes]  # only this fault's ports: others may be bad too
        ctx.tel.nic_error_rate[rows, rail] = 0.0
        ctx.tel.slowdown[rows] = 1.0

    @staticmethod
    def _ports(ctx: Context, target: str) -> tuple[list[str], int]:
        """The nodes behind `target` (a leaf, or one cable of it) and the rail they use."""
        if target.startswith("link:"):
            switch = "switch:" + target.removeprefix("link:").split("/")[0]
            nodes, rail = ctx.topo.nodes_on_leaf(switch)
            port = int(target.rsplit("/p", 1)[1])
            per_group = ctx.topo.spec.nodes_per_group
            return [n for n in nodes if ctx.topo.index[n] % per_group + 1 == port], rail
        return ctx.topo.nodes_on_leaf(target)


class StorageFault(Effect):
    """A shared filesystem slows down or stops answering; every client and every job that
    checkpoints to it feels it."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        system = target.removeprefix("storage:")
        s = ctx.topo.storage.index(system)
        not_responding = mode.id == "storage.nfs.not_responding"
        ctx.tel.storage_factor[s] = 60.0 if not_responding else 8.0
        affected = Affected(entities={target})
        for job in ctx.topo.jobs:
            if job.storage != system:
                continue
            affected.entities.add(job.id)
            for node in job.nodes:
                affected.add_node(ctx.topo, node)
                if not_responding:
                    ctx.line(mode, node, KERNEL, now, storage=system, mount=f"/mnt/{system}")
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        ctx.tel.storage_factor[ctx.topo.storage.index(target.removeprefix("storage:"))] = 1.0


class ThermalThrottle(Effect):
    """Cooling trouble on one GPU: hot, clocked down, and its job a few percent slower."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        node, gpu = _gpu_of(target)
        i = ctx.topo.index[node]
        ctx.tel.gpu_temp_offset[i, gpu] = 38.0
        ctx.tel.gpu_clock_cap[i, gpu] = 1410.0
        ctx.tel.slowdown[i] = max(ctx.tel.slowdown[i], 1.04)
        affected = Affected(entities={target})
        affected.add_node(ctx.topo, node)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        node, gpu = _gpu_of(target)
        i = ctx.topo.index[node]
        ctx.tel.gpu_temp_offset[i, gpu] = 0.0
        ctx.tel.gpu_clock_cap[i, gpu] = 1980.0
        ctx.tel.slowdown[i] = 1.0


class JobFault(Effect):
    """Software faults of one job: they touch its ranks and nothing else."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        job = ctx.topo.job(target.removeprefix("job:"))
        node = job.nodes[len(job.nodes) // 2]  # the rank that hits it
        i = ctx.topo.index[node]
        affected = Affected(entities={target})
        affected.add_node(ctx.topo, node)
        if mode.example is not None:
            rank = job.nodes.index(node) * job.gpus_per_node
            ctx.line(mode, node, TRAINING, now, job=job.name, rank=rank, gpu=0)
        if mode.id == "job.loss_nan":
            for n in job.nodes:
                ctx.tel.loss_nan[ctx.topo.index[n]] = True
                affected.add_node(ctx.topo, n)
        elif mode.id in ("job.dataloader_stall", "job.straggler"):
            ctx.tel.slowdown[i] = 3.0 if mode.id == "job.dataloader_stall" else 1.07
        elif mode.id in ("job.cuda_oom", "job.nccl.remote_error"):
            _fail_job(ctx, node, now + ctx.timing.crash_propagation_s, "remote", affected)
        elif mode.id == "job.nccl.timeout":
            _fail_job(ctx, node, now, "timeout", affected)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        job = ctx.topo.job(target.removeprefix("job:"))
        for n in job.nodes:
            i = ctx.topo.index[n]
            ctx.tel.loss_nan[i] = False
            ctx.tel.slowdown[i] = 1.0
        _restart_job(ctx, job.nodes[0])


class NodeNotResponding(Effect):
    """A host stops answering: its exporters go dark, slurmctld notices, its job stalls."""

    def start(self, ctx: Context, mode: FaultMode, target: str, now: float) -> Affected:
        node = _node_of(ctx.topo, target)
        ctx.tel.unreachable[ctx.topo.index[node]] = True
        ctx.line(mode, CONTROLLER, SCHEDULER, now, node=node)
        ctx.events.emit(now, "Warning", "Node", node, "NodeNotReady",
                        "Node is not ready: kubelet stopped posting node status")
        affected = Affected(entities={target})
        affected.add_node(ctx.topo, node)
        _fail_job(ctx, node, now + ctx.timing.nccl_timeout_s, "timeout", affected)
        return affected

    def heal(self, ctx: Context, mode: FaultMode, target: str, now: float) -> None:
        node = _node_of(ctx.topo, target)
        ctx.tel.unreachable[ctx.topo.index[node]] = False
        ctx.events.emit(now, "Normal", "Node", node, "NodeReady", "Node is ready")
        _restart_job(ctx, node)


EFFECTS: dict[str, Effect] = {}
for _id, _effect in (
    ("net.ib.link_down", NicDown()), ("net.ib.port_errors", SwitchPortErrors()),
    ("storage.nfs.not_responding", StorageFault()), ("storage.slow_io", StorageFault()),
    ("gpu.thermal_throttle", ThermalThrottle()),
    ("sched.slurm.node_not_responding", NodeNotResponding()),
):
    EFFECTS[_id] = _effect


def effect_for(mode: FaultMode) -> Effect | None:
    """The effect that plays `mode`, or None when the simulator cannot express it."""
    if mode.id in EFFECTS:
        return EFFECTS[mode.id]
    if mode.xid is not None:
        return GpuXid()
    if mode.layer == "host":
        return HostFault()
    if mode.layer == "job" and mode.id not in ("job.checkpoint_slow",):
        return JobFault()
    return Effect() if mode.example is not None and mode.layer != "scheduler" else None


def target_kind(mode: FaultMode) -> str:
    """The kind of entity `mode` is injected at: gpu, nic, switch, storage, job or node."""
    if mode.xid is not None or mode.id == "gpu.thermal_throttle":
        return "gpu"
    return {"net.ib.link_down": "nic", "net.ib.port_errors": "switch",
            "storage.nfs.not_responding": "storage", "storage.slow_io": "storage"}.get(
        mode.id, "job" if mode.layer == "job" else "node")


# --- consequences shared by several effects -------------------------------------------------

NCCL_TIMEOUT = ("[Rank {rank}] Watchdog caught collective operation timeout: "
                "WorkNCCL(SeqNum={seq}, OpType=ALLREDUCE, NumelIn=262144, NumelOut=262144, "
                "Timeout(ms)={ms}) ran for "
                "{ran} milliseconds before timing out.")
NCCL_REMOTE = ("[Rank {rank}] RuntimeError: NCCL error in: ../torch/csrc/distributed/c10d/"
               "ProcessGroupNCCL.cpp:1970, remote process exited or there was a network error, "
               "NCCL version 2.21.5")


def _fail_job(ctx: Context, origin: str, when: float, how: str, affected: Affected) -> None:
    """At `when`, every other node of `origin`'s job reports the collective failure and the
    job stops."""
    name = ctx.topo.job_of.get(origin)
    if name is None:
        return
    job = ctx.topo.job(name)
    for node in job.nodes:
        affected.add_node(ctx.topo, node)

    def fail(now: float) -> None:
        seq = int(ctx.tel.iteration[ctx.topo.index[origin]]) * 24
        timeout_ms = int(ctx.timing.nccl_timeout_s * 1000)
        for node in job.nodes:
            i = ctx.topo.index[node]
            if node == origin or not ctx.tel.job_running[i]:
                continue
            rank = job.nodes.index(node) * job.gpus_per_node
            text = (NCCL_TIMEOUT.format(rank=rank, seq=seq, ms=timeout_ms, ran=timeout_ms + 41)
                    if how == "timeout" else NCCL_REMOTE.format(rank=rank))
            ctx.logs.write(node, TRAINING, now, text)
        for node in job.nodes:
            i = ctx.topo.index[node]
            if ctx.tel.job_running[i]:
                ctx.events.emit(now, "Warning", "Pod", job.pod(node).removeprefix("pod:"),
                                "Failed", f"container trainer exited with code 1 on {node}")
            ctx.tel.job_running[i] = False

    ctx.schedule.at(when, fail)


def _restart_job(ctx: Context, node: str) -> None:
    name = ctx.topo.job_of.get(node)
    if name is None:
        return
    job = ctx.topo.job(name)
    for n in job.nodes:
        if not ctx.tel.job_running[ctx.topo.index[n]]:
            ctx.events.emit(ctx.tel.now, "Normal", "Pod", job.pod(n).removeprefix("pod:"),
                            "Started", f"restarted container trainer on {n}")
    rows = [ctx.topo.index[n] for n in job.nodes]
    ctx.tel.job_running[rows] = True
    ctx.tel.gpu_idle[rows] = False


def _node_of(topo: SimTopology, target: str) -> str:
    kind, _, rest = target.partition(":")
    if kind == "job":
        return topo.job(rest).nodes[0]
    return rest.split("/")[0]


def _gpu_of(target: str) -> tuple[str, int]:
    node, _, gpu = target.removeprefix("gpu:").partition("/")
    return node, int(gpu)


def _nic_of(target: str) -> tuple[str, int]:
    node, _, nic = target.removeprefix("nic:").partition("/")
    return node, int(nic.removeprefix("mlx5_"))


def _xid_pci(bus_id: str) -> str:
    """The NVRM Xid line prints the PCI address as DDDD:BB:DD, e.g. 0000:3a:00."""
    domain, bus, dev_fn = bus_id.lower().split(":")
    return f"{domain[-4:]}:{bus}:{dev_fn.split('.')[0]}"

