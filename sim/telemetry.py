"""Healthy-looking telemetry for the whole simulated cluster, as arrays, and its exposition.

State is a handful of numpy arrays (one row per node, one column per GPU or NIC), so one
step for 8,192 GPUs is a few vector operations. Faults act through the `*_factor`,
`*_offset` and flag arrays; `step()` folds them in. Exposition text is rendered per
endpoint, under the names the real exporters use (dcgm-exporter, node-exporter's
infiniband collector, a training framework's metrics, a storage system's exporter).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
from vigil.sim.topology import GPU_PCI, SimTopology

MODEL_NAME = "NVIDIA H100 80GB HBM3"
ACTIVE, DOWN = 4.0, 1.0  # InfiniBand port states as node-exporter reports them
THERMAL_BIT = 0x20  # DCGM clocks-event reason: HW thermal slowdown (+ 0x40 SW thermal)

# name, type, help, array attribute
GPU_FAMILIES = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "sm_clock"),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", "mem_clock"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", "mem_temp"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temp"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
     "Total energy consumption since boot (in mJ).", "energy"),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", "pcie_replay"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "util"),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", "fb_used"),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter",
     "Total number of single-bit volatile ECC errors.", "ecc_sbe"),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter",
     "Total number of double-bit volatile ECC errors.", "ecc_dbe"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "xid"),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "gauge",
     "Current clock throttle reasons (bitmask).", "throttle"),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter",
     "Total number of NVLink bandwidth counters for all lanes.", "nvlink_bw"),
)
NIC_FAMILIES = (
    ("node_infiniband_port_data_received_bytes_total", "counter",
     "Number of data octets received on all links", "rcv_bytes"),
    ("node_infiniband_port_data_transmitted_bytes_total", "counter",
     "Number of data octets transmitted on all links", "xmit_bytes"),
    ("node_infiniband_link_downed_total", "counter",
     "Number of times the link failed to recover from an error state and went down",
     "link_downed"),
    ("node_infiniband_link_error_recovery_total", "counter",
     "Number of times the link successfully recovered from an error state", "link_recovery"),
    ("node_infiniband_symbol_error_total", "counter",
     "Number of minor link errors detected on one or more physical lanes", "symbol_errors"),
    ("node_infiniband_port_errors_received_total", "counter",
     "Number of packets containing an error that were received on this port", "rcv_errors"),
    ("node_infiniband_state_id", "gauge", "State of the InfiniBand port (4: ACTIVE, 1: DOWN)",
     "port_state"),
)


class Telemetry:
    """Every metric of the cluster at the current step."""

    def __init__(self, topo: SimTopology, seed: int, now: float) -> None:
        self.topo = topo
        n, g, k = len(topo.nodes), topo.spec.gpus_per_node, topo.spec.nics_per_node
        self.rng = np.random.default_rng(seed)
        self.now = now
        gpus, nics = (n, g), (n, k)
        # GPUs (node, gpu)
        self.sm_clock, self.mem_clock = np.zeros(gpus), np.zeros(gpus)
        self.temp, self.mem_temp = np.zeros(gpus), np.zeros(gpus)
        self.power, self.energy = np.zeros(gpus), np.zeros(gpus)
        self.util, self.fb_used = np.zeros(gpus), np.zeros(gpus)
        self.pcie_replay, self.nvlink_bw = np.zeros(gpus), np.zeros(gpus)
        self.ecc_sbe, self.ecc_dbe = np.zeros(gpus), np.zeros(gpus)
        self.xid, self.throttle = np.zeros(gpus), np.zeros(gpus)
        self.gpu_lost = np.zeros(gpus, dtype=bool)
        self.gpu_temp_offset = np.zeros(gpus)  # faults: cooling trouble
        self.gpu_clock_cap = np.full(gpus, 1980.0)
        self.gpu_idle = np.zeros(gpus, dtype=bool)  # the process on it died
        self.ambient = self.rng.normal(0, 1.5, gpus)  # each GPU sits in its own airflow
        # NICs (node, nic)
        self.rcv_bytes, self.xmit_bytes = np.zeros(nics), np.zeros(nics)
        self.link_downed, self.link_recovery = np.zeros(nics), np.zeros(nics)
        self.symbol_errors, self.rcv_errors = np.zeros(nics), np.zeros(nics)
        self.port_state = np.full(nics, ACTIVE)
        self.nic_error_rate = np.zeros(nics)  # symbol errors per second added by faults
        # Nodes
        self.unreachable = np.zeros(n, dtype=bool)
        self.load1 = np.zeros(n)
        self.mem_available = np.zeros(n)
        # Training, one trainer process per node
        self.step_time = np.zeros(n)  # seconds per iteration, the same on every node of a job
        self.compute_time = np.zeros(n)  # this node's share before it waits at collectives
        self.slowdown = np.ones(n)  # faults: >1 makes this node a straggler
        self.iteration = np.zeros(n)
        self.loss = np.zeros(n)
        self.loss_nan = np.zeros(n, dtype=bool)
        self.checkpoint_s = np.zeros(n)
        self.job_running = np.array([node in topo.job_of for node in topo.nodes])
        self.base_step = np.array([_base_step(topo.job_of.get(node, "")) for node in topo.nodes])
        # Storage systems
        self.storage_factor = np.ones(len(topo.storage))
        self.storage_latency = np.zeros(len(topo.storage))
        self.storage_throughput = np.zeros(len(topo.storage))
        self._job_rows = [np.array([topo.index[m] for m in job.nodes]) for job in topo.jobs]
        self._gpu_labels = [_gpu_labels(node, g) for node in topo.nodes]
        self.step(now)

    def step(self, now: float) -> None:
        """Advance to `now`: busy GPUs in training, drift over the day, noise everywhere."""
        dt = max(0.0, now - self.now) if now > self.now else 0.0
        self.now = now
        rng, shape = self.rng, self.temp.shape
        day = math.sin(2 * math.pi * (now % 86400) / 86400)  # cooler at night, warmer by day
        busy = ~self.gpu_idle & self.job_running[:, None]
        util = np.where(busy, np.clip(rng.normal(93, 3, shape), 0, 100), rng.uniform(0, 2, shape))
        self.util[:] = np.round(util)
        # Brief hot spikes (a fan curve lagging a burst) on about 1 GPU in 500: harmless, and
        # exactly what makes a naive "temperature above 85 C" rule cry wolf.
        spikes = np.where(rng.random(shape) < 0.002, rng.uniform(10, 18, shape), 0.0)
        self.temp[:] = np.round(42 + 0.3 * util + 3 * day + self.ambient + spikes
                                + self.gpu_temp_offset + rng.normal(0, 1.2, shape))
        self.mem_temp[:] = self.temp + 7
        self.power[:] = np.round(90 + 5.6 * util + rng.normal(0, 18, shape), 3)
        self.energy += self.power * dt * 1000
        self.sm_clock[:] = np.minimum(np.where(busy, 1980.0, 345.0), self.gpu_clock_cap)
        self.mem_clock[:] = 2619.0
        self.fb_used[:] = np.where(busy, np.round(71000 + rng.normal(0, 400, shape)), 0)
        self.ecc_sbe += rng.poisson(0.0005 * dt, shape)
        self.pcie_replay += rng.poisson(0.001 * dt, shape)
        self.nvlink_bw += np.where(busy, rng.normal(2.2e5, 1e4, shape) * dt, 0)
        self.throttle[:] = np.where(self.gpu_temp_offset > 20, THERMAL_BIT, 0)
        # NICs: steady all-reduce traffic, a rare symbol error, and what faults add
        up = self.port_state == ACTIVE
        traffic = np.where(up, rng.normal(2.4e10, 1e9, self.rcv_bytes.shape), 0)
        self.rcv_bytes += traffic * dt * self.job_running[:, None]
        self.xmit_bytes += traffic * dt * self.job_running[:, None]
        self.symbol_errors += rng.poisson(1e-4 * dt + self.nic_error_rate * dt)
        self.link_recovery += rng.poisson(self.nic_error_rate * dt / 50)
        # Hosts
        n = len(self.load1)
        self.load1[:] = np.round(np.clip(rng.normal(38, 4, n), 0, None), 2)
        self.mem_available[:] = np.round(rng.normal(1.4e12, 2e10, n))
        # Training: synchronous data parallelism, so the slowest node sets every node's pace
        compute = self.base_step * self.slowdown * rng.normal(1, 0.01, n)
        self.compute_time[:] = np.round(compute, 4)
        for rows in self._job_rows:
            self.step_time[rows] = np.round(compute[rows].max() * 1.06, 4)
        running = self.job_running & ~self.unreachable
        self.iteration += np.where(running & (self.step_time > 0),
                                   dt / np.maximum(self.step_time, 1e-9), 0)
        self.loss[:] = np.where(self.loss_nan, np.nan,
                                2.0 + 6.0 / np.sqrt(1 + self.iteration / 200)
                                + rng.normal(0, 0.02, n))
        storage_now = 0.004 * self.storage_factor * rng.lognormal(0, 0.15, len(self.storage_factor))
        self.storage_latency[:] = np.round(storage_now, 6)
        self.storage_throughput[:] = np.round(4.0e10 / self.storage_factor, 0)
        pfs = self.storage_factor[0]
        self.checkpoint_s[:] = np.round(38.0 * pfs * rng.normal(1, 0.05, n), 2)

    # --- exposition ----------------------------------------------------------------------
    def dcgm(self, node: str) -> str:
        """dcgm-exporter's /metrics for `node`; GPUs off the bus are missing."""
        i = self.topo.index[node]
        present = np.flatnonzero(~self.gpu_lost[i])
        labels = self._gpu_labels[i]
        out: list[str] = []
        for name, kind, help_text, attr in GPU_FAMILIES:
            row = getattr(self, attr)[i]
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            out += [f"{name}{{{labels[g]}}} {row[g]:.6g}\n" for g in present]
        return "".join(out)

    def node_exporter(self, node: str) -> str:
        """node-exporter's /metrics: load, memory, and the infiniband collector per port."""
        i = self.topo.index[node]
        out = [
            "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\n",
            f"node_load1 {self.load1[i]:.6g}\n",
            "# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.\n"
            "# TYPE node_memory_MemAvailable_bytes gauge\n",
            f"node_memory_MemAvailable_bytes {self.mem_available[i]:.10g}\n",
        ]
        k = self.topo.spec.nics_per_node
        for name, kind, help_text, attr in NIC_FAMILIES:
            row = getattr(self, attr)[i]
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            out += [f'{name}{{device="mlx5_{n}",port="1"}} {row[n]:.10g}\n' for n in range(k)]
        return "".join(out)

    def trainer(self, node: str) -> str | None:
        """The training framework's metrics for the job's process on `node` (None: no job)."""
        job = self.topo.job_of.get(node)
        i = self.topo.index[node]
        if job is None or not self.job_running[i]:
            return None
        labels = f'job="{job}",node="{node}"'
        rows = (
            ("training_step_time_seconds", "gauge", "Seconds per training iteration.",
             self.step_time[i]),
            ("training_compute_time_seconds", "gauge",
             "Seconds this node computes per iteration before waiting at collectives.",
             self.compute_time[i]),
            ("training_iteration", "counter", "Iterations completed.",
             math.floor(self.iteration[i])),
            ("training_tokens_per_second", "gauge", "Tokens processed per second by this node.",
             0.0 if self.step_time[i] == 0 else 8 * 4096 * 4 / self.step_time[i]),
            ("training_loss", "gauge", "Training loss of the last iteration.", self.loss[i]),
            ("training_checkpoint_duration_seconds", "gauge",
             "Seconds the last checkpoint save took.", self.checkpoint_s[i]),
        )
        return "".join(f"# HELP {n} {h}\n# TYPE {n} {t}\n{n}{{{labels}}} {float(v):.6g}\n"
                       for n, t, h, v in rows)

    def storage(self, system: str) -> str:
        s = self.topo.storage.index(system)
        labels = f'system="{system}"'
        return (
            "# HELP storage_operation_latency_seconds Mean client-observed operation latency.\n"
            "# TYPE storage_operation_latency_seconds gauge\n"
            f"storage_operation_latency_seconds{{{labels}}} {self.storage_latency[s]:.6g}\n"
            "# HELP storage_throughput_bytes_per_second Aggregate read+write throughput.\n"
            "# TYPE storage_throughput_bytes_per_second gauge\n"
            f"storage_throughput_bytes_per_second{{{labels}}} {self.storage_throughput[s]:.6g}\n"
        )


def gpu_uuid(node: str, gpu: int) -> str:
    """A stable, made-up GPU UUID in NVIDIA's format, the same in every run."""
    rng = np.random.default_rng([zlib.crc32(node.encode()), gpu])
    h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _gpu_labels(node: str, gpus: int) -> list[str]:
    return [f'gpu="{g}",UUID="{gpu_uuid(node, g)}",pci_bus_id="{GPU_PCI[g]}",'
            f'device="nvidia{g}",modelName="{MODEL_NAME}",Hostname="{node}"'
            for g in range(gpus)]


def _base_step(job: str) -> float:
    """Seconds per iteration by model size, roughly what such jobs see on H100s."""
    for size, seconds in (("405b", 9.5), ("70b", 4.2), ("8b", 1.1)):
        if f"-{size}-" in job:
            return seconds
    return 0.0
