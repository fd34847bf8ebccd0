"""The simulated cluster: topology, telemetry, logs and faults, advanced one step at a time."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vigil.diagnosis.library import FaultLibrary, FaultMode
from vigil.sim.effects import CONTROLLER, Context, Timing, effect_for, target_kind
from vigil.sim.events import EventLog
from vigil.sim.logs import KERNEL, SCHEDULER, TRAINING, LogWriter
from vigil.sim.telemetry import Telemetry
from vigil.sim.topology import GPU_PCI, ClusterSpec, SimTopology, build_topology
from vigil.sim.truth import TruthFault

# Harmless lines real hosts log; they must never become alerts.
KERNEL_NOISE = (
    "perf: interrupt took too long (2503 > 2500), lowering "
    "kernel.perf_event_max_sample_rate to 79750",
    "mlx5_core 0000:1a:00.0: mlx5_fw_tracer_handle_traces:741: FWTracer: Events were lost",
    "nvidia-nvswitch3: SXid (PCI:0000:07:00.0): 00000, NVLink link 14 training to ACTIVE",
    "EXT4-fs (nvme0n1p1): re-mounted. Quota mode: none.",
    "audit: type=1400 audit(0.0:42): apparmor=\"STATUS\" operation=\"profile_replace\"",
)


class InjectError(ValueError):
    """A fault or target the simulation does not have; the message lists the valid ones."""


@dataclass(frozen=True, slots=True)
class Injection:
    fault_id: str
    target: str
    injected_at: float
    log_line: str
    truth: TruthFault | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    """Where one host's logs are, for collectors and tests."""

    name: str
    gpus: int
    kernel_log: Path
    training_log: Path

    def pci_bus_id(self, gpu: int) -> str:
        return GPU_PCI[gpu]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One /metrics endpoint the simulator serves, as a scrape config would list it."""

    path: str  # e.g. "/nodes/gpu-a-001/node-exporter/metrics"
    host: str  # the node (or storage system) it describes
    exporter: str  # "dcgm", "node_exporter", "trainer" or "storage"
    service: str  # the real exporter it stands for, as OTel's service.name


@dataclass(order=True)
class _Pending:
    when: float
    seq: int
    action: Callable[[float], None] = field(compare=False)


@dataclass
class _Active:
    mode: FaultMode
    target: str
    truth: TruthFault
    consequences: frozenset[int] = frozenset()  # seqs of the _Pending items its start scheduled


class SimCluster:
    """A GPU training cluster; `step()` advances it, `inject()` breaks something."""

    def __init__(
        self, library: FaultLibrary, log_dir: Path, nodes: int = 4, gpus_per_node: int = 8,
        seed: int = 7, now: float = 0.0, spec: ClusterSpec | None = None,
        timing: Timing | None = None, log_interval_s: float = 10.0,
    ) -> None:
        self.library = library
        self.spec = spec or ClusterSpec(racks=1, nodes_per_rack=nodes,
                                        gpus_per_node=gpus_per_node, seed=seed)
        self.topo: SimTopology = build_topology(self.spec)
        self.tel = Telemetry(self.topo, self.spec.seed, now)
        self.log_dir = log_dir
        self.logs = LogWriter(log_dir)
        self.log_interval_s = log_interval_s
        self._lock = threading.RLock()
        self._pending: list[_Pending] = []
        self._seq = itertools.count()
        self._active: list[_Active] = []
        self._last_log = now
        self.events = EventLog()
        self.ctx = Context(self.topo, self.tel, self.logs, self, timing or Timing(),
                           itertools.count(4001), self.events)
        self.nodes = {
            n: NodeView(n, self.spec.gpus_per_node, self.logs.touch(n, KERNEL),
                        self.logs.touch(n, TRAINING))
            for n in self.topo.nodes
        }
        self.scheduler_log = self.logs.touch(CONTROLLER, SCHEDULER)

    # --- what exists -------------------------------------------------------------------
    def entities(self) -> list[str]:
        return self.topo.entities()

    def injectable(self) -> list[FaultMode]:
        """Fault modes this simulation can play."""
        return [m for m in self.library if effect_for(m) is not None]

    def log_files(self) -> list[tuple[Path, str, str]]:
        """(path, host, source) of every log the cluster writes."""
        out = [(v.kernel_log, n, KERNEL) for n, v in self.nodes.items()]
        out += [(v.training_log, n, TRAINING) for n, v in self.nodes.items()]
        out.append((self.scheduler_log, CONTROLLER, SCHEDULER))
        return out

    def endpoints(self) -> list[Endpoint]:
        """Every exporter this cluster serves: the single list the server's /targets, the
        Prometheus file_sd and Vigil's own collectors are all made from."""
        out: list[Endpoint] = []
        for node in self.nodes:
            out.append(Endpoint(f"/nodes/{node}/metrics", node, "dcgm", "dcgm-exporter"))
            out.append(Endpoint(f"/nodes/{node}/node-exporter/metrics", node, "node_exporter",
                                "node-exporter"))
            if node in self.topo.job_of:
                out.append(Endpoint(f"/nodes/{node}/trainer/metrics", node, "trainer",
                                    "trainer"))
        out += [Endpoint(f"/storage/{s}/metrics", s, "storage", "storage-exporter")
                for s in self.topo.storage]
        return out

    def at(self, when: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._pending, _Pending(when, next(self._seq), action))

    # --- time ----------------------------------------------------------------------------
    def step(self, now: float) -> None:
        with self._lock:
            while self._pending and self._pending[0].when <= now:
                item = heapq.heappop(self._pending)
                item.action(max(item.when, now - 1e-3))
            for active in [a for a in self._active if a.truth.end <= now]:
                self._heal(active, now)
            self.tel.step(now)
            if now - self._last_log >= self.log_interval_s:
                self._routine_logs(now)
                self._last_log = now

    def _routine_logs(self, now: float) -> None:
        tel, topo = self.tel, self.topo
        for job in topo.jobs:
            i = topo.index[job.nodes[0]]
            if tel.job_running[i]:
                self.logs.write(job.nodes[0], TRAINING, now,
                                f"[Rank 0] iteration {int(tel.iteration[i])} | step time "
                                f"{tel.step_time[i]:.3f} s | loss {tel.loss[i]:.4f} | "
                                f"tokens/s {8 * 4096 * 4 / max(tel.step_time[i], 1e-9):.0f}")
        noisy = tel.rng.random(len(topo.nodes)) < 0.02  # about one harmless line a node per 8 min
        for row in noisy.nonzero()[0].tolist():
            message = KERNEL_NOISE[int(tel.rng.integers(len(KERNEL_NOISE)))]
            self.logs.write(topo.nodes[row], KERNEL, now, message)

    # --- faults --------------------------------------------------------------------------
    def inject(self, fault_id: str, target: str, now: float, duration_s: float = 3600.0,
               scenario: str = "manual") -> Injection:
        modes = {m.id: m for m in self.injectable()}
        if fault_id not in modes:
            raise InjectError(f"unknown fault {fault_id!r}; valid faults: "
                              + ", ".join(sorted(modes)))
        mode = modes[fault_id]
        self._check_target(mode, target)
        effect = effect_for(mode)
        assert effect is not None
        with self._lock:
            mark = self.logs.written
            scheduled = {p.seq for p in self._pending}
            affected = effect.start(self.ctx, mode, target, now)
            consequences = frozenset(p.seq for p in self._pending if p.seq not in scheduled)
            truth = TruthFault(
                scenario=scenario, fault_id=mode.id, layer=mode.layer, root_entity=target,
                onset=now, end=now + duration_s, affected=tuple(sorted(affected.entities)),
                nodes=tuple(sorted(affected.nodes)))
            self._active.append(_Active(mode, target, truth, consequences))
            new_lines = self.logs.since(mark)
        return Injection(fault_id, target, now, new_lines[0] if new_lines else "", truth)

    def heal_all(self, now: float) -> None:
        with self._lock:
            for active in list(self._active):
                self._heal(active, now)
            self._pending.clear()

    def _heal(self, active: _Active, now: float) -> None:
        effect = effect_for(active.mode)
        if effect is not None:
            effect.heal(self.ctx, active.mode, active.target, now)
        self._active.remove(active)
        # A fault repaired before its consequences arrive has none (a job must not die later).
        if active.consequences:
            self._pending = [p for p in self._pending if p.seq not in active.consequences]
            heapq.heapify(self._pending)

    def _check_target(self, mode: FaultMode, target: str) -> None:
        kind = target_kind(mode)
        valid = [e for e in self.entities() if e.startswith(f"{kind}:")]
        if target not in valid:
            raise InjectError(f"unknown target {target!r}; {mode.id} is injected at a {kind}, "
                              f"one of: {', '.join(valid[:40])}"
                              + (f" … ({len(valid)} in all)" if len(valid) > 40 else ""))


    # --- exposition ----------------------------------------------------------------------
    def unreachable(self, node: str) -> bool:
        return bool(self.tel.unreachable[self.topo.index[node]])

    def exposition(self, node: str) -> str:
        """dcgm-exporter's /metrics for `node`."""
        with self._lock:
            return self.tel.dcgm(node)

    def node_exporter(self, node: str) -> str:
        with self._lock:
            return self.tel.node_exporter(node)

    def trainer(self, node: str) -> str | None:
        with self._lock:
            return self.tel.trainer(node)

    def storage(self, system: str) -> str:
        with self._lock:
            return self.tel.storage(system)
