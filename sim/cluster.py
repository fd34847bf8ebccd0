"""The simulated cluster: GPU nodes with DCGM-style telemetry, kernel logs, injectable faults."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from vigil.diagnosis.library import FaultLibrary, FaultMode

# PCI bus ids of the eight GPUs in an HGX H100 baseboard, as dcgm-exporter labels them.
HGX_PCI_BUS_IDS = (
    "00000000:18:00.0", "00000000:2A:00.0", "00000000:3A:00.0", "00000000:5D:00.0",
    "00000000:9A:00.0", "00000000:AB:00.0", "00000000:BA:00.0", "00000000:DB:00.0",
    "00000000:1B:00.0", "00000000:2C:00.0", "00000000:3C:00.0", "00000000:5F:00.0",
    "00000000:9C:00.0", "00000000:AD:00.0", "00000000:BC:00.0", "00000000:DD:00.0",
)
MODEL_NAME = "NVIDIA H100 80GB HBM3"

# (metric, type, help) in the order dcgm-exporter's default counters list them.
GPU_METRICS = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors."),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors."),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
)


class InjectError(ValueError):
    """A fault or target the simulation does not have; the message lists the valid ones."""


@dataclass(frozen=True, slots=True)
class Injection:
    fault_id: str
    target: str
    injected_at: float
    log_line: str


@dataclass
class SimNode:
    """One host: its GPUs' telemetry as arrays (one entry per GPU) and its log files."""

    name: str
    gpus: int
    log_dir: Path
    rng: np.random.Generator
    uuids: list[str] = field(default_factory=list)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    lost: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def kernel_log(self) -> Path:
        return self.log_dir / self.name / "kern.log"

    def pci_bus_id(self, gpu: int) -> str:
        return HGX_PCI_BUS_IDS[gpu]


class SimCluster:
    """A small GPU cluster; `step()` advances telemetry, `inject()` breaks something."""

    def __init__(
        self, library: FaultLibrary, log_dir: Path, nodes: int = 4, gpus_per_node: int = 8,
        seed: int = 7, now: float = 0.0,
    ) -> None:
        self.library = library
        self.log_dir = log_dir
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._pid = 4000
        self.nodes: dict[str, SimNode] = {}
        for i in range(nodes):
            name = f"gpu-a-{i + 1:03d}"
            node = SimNode(name=name, gpus=gpus_per_node, log_dir=log_dir,
                           rng=np.random.default_rng(seed * 1000 + i))
            node.uuids = [_uuid(self._rng) for _ in range(gpus_per_node)]
            node.lost = np.zeros(gpus_per_node, dtype=bool)
            node.values = {m: np.zeros(gpus_per_node) for m, _, _ in GPU_METRICS}
            node.kernel_log.parent.mkdir(parents=True, exist_ok=True)
            node.kernel_log.touch()
            self.nodes[name] = node
        self.step(now)

    # --- what exists -------------------------------------------------------------------
    def entities(self) -> list[str]:
        out: list[str] = []
        for node in self.nodes.values():
            out.append(f"node:{node.name}")
            out += [f"gpu:{node.name}/{g}" for g in range(node.gpus)]
        return out

    def injectable(self) -> list[FaultMode]:
        """Fault modes this simulation can express: those whose library entry shows a log line."""
        return [m for m in self.library if m.example is not None]

    # --- time --------------------------------------------------------------------------
    def step(self, now: float) -> None:
        """Advance every node's telemetry to `now`: noisy, busy GPUs in a training job."""
        with self._lock:
            for node in self.nodes.values():
                v, rng, n = node.values, node.rng, node.gpus
                util = np.clip(rng.normal(92, 4, n), 0, 100)
                v["DCGM_FI_DEV_GPU_UTIL"] = np.round(util)
                v["DCGM_FI_DEV_GPU_TEMP"] = np.round(48 + 0.25 * util + rng.normal(0, 1.5, n))
                v["DCGM_FI_DEV_MEMORY_TEMP"] = np.round(v["DCGM_FI_DEV_GPU_TEMP"] + 8)
                v["DCGM_FI_DEV_POWER_USAGE"] = np.round(180 + 5 * util + rng.normal(0, 15, n), 3)
                v["DCGM_FI_DEV_SM_CLOCK"] = np.full(n, 1980.0)
                v["DCGM_FI_DEV_MEM_CLOCK"] = np.full(n, 2619.0)
                v["DCGM_FI_DEV_FB_USED"] = np.round(71000 + rng.normal(0, 300, n))
                v["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] += rng.poisson(0.002, n)
                v["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"] += rng.poisson(0.01, n)

    # --- faults ------------------------------------------------------------------------
    def inject(self, fault_id: str, target: str, now: float) -> Injection:
        modes = {m.id: m for m in self.injectable()}
        if fault_id not in modes:
            valid = ", ".join(sorted(modes))
            raise InjectError(f"unknown fault {fault_id!r}; valid faults: {valid}")
        mode = modes[fault_id]
        node, gpu = self._resolve(target, needs_gpu=mode.xid is not None)
        assert mode.example is not None
        with self._lock:
            self._pid += 1
            message = mode.example.format(
                pci=_xid_pci(node.pci_bus_id(gpu if gpu is not None else 0)),
                pid=self._pid, node=node.name,
            )
            if mode.xid is not None and gpu is not None:
                node.values["DCGM_FI_DEV_XID_ERRORS"][gpu] = mode.xid
                if mode.xid == 48:
                    node.values["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"][gpu] += 1
                if mode.xid == 79:
                    node.lost[gpu] = True  # dcgm-exporter stops reporting a GPU off the bus
            line = _kernel_line(node, now, message)
            with node.kernel_log.open("a") as f:
                f.write(line + "\n")
        return Injection(fault_id=fault_id, target=target, injected_at=now, log_line=line)

    def _resolve(self, target: str, needs_gpu: bool) -> tuple[SimNode, int | None]:
        valid = self.entities()
        if target not in valid:
            kinds = "gpu:NODE/INDEX" if needs_gpu else "node:NODE or gpu:NODE/INDEX"
            raise InjectError(
                f"unknown target {target!r}; expected {kinds}, one of: "
                + ", ".join(t for t in valid if t.startswith("gpu:") or not needs_gpu)
            )
        kind, _, rest = target.partition(":")
        if kind == "node":
            if needs_gpu:
                raise InjectError(f"{target} is a node; this fault needs a GPU (gpu:NODE/INDEX)")
            return self.nodes[rest], None
        name, _, index = rest.partition("/")
        return self.nodes[name], int(index)

    # --- exposition ----------------------------------------------------------------------
    def exposition(self, node_name: str) -> str:
        """The node's GPU metrics in Prometheus text format, labelled as dcgm-exporter does."""
        node = self.nodes[node_name]
        with self._lock:
            labels = [
                f'gpu="{g}",UUID="{node.uuids[g]}",pci_bus_id="{node.pci_bus_id(g)}",'
                f'device="nvidia{g}",modelName="{MODEL_NAME}",Hostname="{node.name}"'
                for g in range(node.gpus)
            ]
            present = [g for g in range(node.gpus) if not node.lost[g]]
            out: list[str] = []
            for metric, kind, help_text in GPU_METRICS:
                out.append(f"# HELP {metric} {help_text}\n# TYPE {metric} {kind}\n")
                values = node.values[metric]
                out += [f"{metric}{{{labels[g]}}} {values[g]:g}\n" for g in present]
        return "".join(out)


def _uuid(rng: np.random.Generator) -> str:
    h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _xid_pci(bus_id: str) -> str:
    """The NVRM Xid line prints the PCI address as DDDD:BB:DD, e.g. 0000:3a:00."""
    domain, bus, dev_fn = bus_id.lower().split(":")
    return f"{domain[-4:]}:{bus}:{dev_fn.split('.')[0]}"


def _kernel_line(node: SimNode, now: float, message: str) -> str:
    """A kernel log line as `journalctl -k -o short-iso-precise` prints it.

    journald keeps the printk uptime as a field and the short formats do not print it, so the
    message follows `kernel: ` directly (the `[  123.456789]` prefix is dmesg's, not journalctl's).
    """
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return f"{stamp} {node.name} kernel: {message}"
