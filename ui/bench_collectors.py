"""`vigil bench collectors`: what a node's collectors cost, measured in a process of their own.

The node is an 8-GPU machine as a real one looks to Vigil: this host's own /proc and /sys
(the host collector), a dcgm-exporter endpoint with 8 GPUs (the simulator serves it, from
this process) and a kernel log written at `log_rate` lines a second. A child process runs
the three collectors for `rounds` intervals back to back, publishing through the spool to a
real Kafka (the embedded Tansu), and reports its own CPU time and peak memory. CPU per
interval is what the node would spend every `interval_s`, so the share of a core it needs is
CPU per interval / interval. Two more phases in the same child give the most one core
sustains: metric samples a second (host + dcgm scrapes) and log lines a second (a long file
read in one go), each with a publisher that discards, so the figure is the collectors'.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigil.diagnosis.library import load_library
from vigil.sim.clock import SimClock
from vigil.sim.cluster import SimCluster
from vigil.sim.server import SimServer
from vigil.sim.topology import ClusterSpec
from vigil.ui.bench_collectors_child import THROUGHPUT_LINES

from vigil.broker import EmbeddedBroker
from vigil.bus import Bus
from vigil.settings import KafkaSettings

LINE = ("{time} gpu-a-017 kernel: NVRM: GPU at PCI:0000:18:00: GPU-5f1c2d3e, temperature "
        "within limits, ecc ok, rows remapped 0, seq {n}\n")


def run(rounds: int = 60, interval_s: float = 10.0, log_rate: float = 20.0, kafka: bool = True,
        progress: Callable[[str], None] = lambda what: None) -> dict[str, Any]:
    """Start the sources (and Kafka), measure the child, return its figures, flat."""
    with tempfile.TemporaryDirectory(prefix="vigil-bench-collectors-") as tmp:
        work = Path(tmp)
        progress("starting the simulated node")
        cluster = SimCluster(load_library(), work / "sim", spec=ClusterSpec(
            racks=1, nodes_per_rack=1, gpus_per_node=8, jobs=1, seed=7))
        server = SimServer(cluster, "127.0.0.1", 0, interval_s=interval_s,
                           clock=SimClock(speed=1.0))
        server.start()
        broker = EmbeddedBroker(work / "tansu.log") if kafka else None
        try:
            dcgm = next(server.url + e.path for e in cluster.endpoints()
                        if e.service == "dcgm-exporter")
            kernel_log = work / "kern.log"
            _write_lines(kernel_log, int(rounds * interval_s * log_rate), 0)
            throughput_log = work / "throughput.log"
            _write_lines(throughput_log, THROUGHPUT_LINES, 0)
            bootstrap = ""
            if broker is not None:
                progress("starting Kafka")
                broker.start()
                Bus(broker.bootstrap, KafkaSettings()).ensure_topics()
                bootstrap = broker.bootstrap
            progress(f"measuring {rounds} intervals in a child process")
            plan = {"rounds": rounds, "dcgm": dcgm, "kernel_log": str(kernel_log),
                    "throughput_log": str(throughput_log), "bootstrap": bootstrap,
                    "spool": str(work / "spool")}
            done = subprocess.run([sys.executable, "-m", "vigil.ui.bench_collectors_child",
                                   json.dumps(plan)], capture_output=True, text=True,
                                  timeout=max(600.0, rounds * 10.0), check=False)
            if done.returncode != 0:
                raise RuntimeError(f"the measuring process failed:\n{done.stderr[-3000:]}")
            child: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            server.shutdown()
            if broker is not None:
                broker.shutdown()
    return _figures(child, rounds, interval_s, log_rate, kafka)


def _figures(child: dict[str, Any], rounds: int, interval_s: float, log_rate: float,
             kafka: bool) -> dict[str, Any]:
    cpu_per_interval = child["node_cpu_s"] / rounds
    return {
        "node_gpus": 8,
        "interval_s": interval_s,
        "intervals": rounds,
        "log_lines_per_s_written": log_rate,
        "kafka": kafka,
        "samples_per_interval": round(child["node_samples"] / rounds),
        "log_lines_published": child["node_lines"],
        "messages_published": child["node_messages"],
        "bytes_per_interval": round(child["node_bytes"] / rounds),
        "cpu_ms_per_interval": round(cpu_per_interval * 1000, 2),
        "cpu_s_per_node_hour": round(cpu_per_interval * 3600 / interval_s, 2),
        "core_percent": round(cpu_per_interval / interval_s * 100, 3),
        "peak_rss_mb": round(child["peak_rss_kb"] / 1024, 1),
        "rss_before_collectors_mb": round(child["base_rss_kb"] / 1024, 1),
        "max_samples_per_s": round(child["throughput_samples"] / child["throughput_samples_cpu_s"]),
        "max_log_lines_per_s": round(child["throughput_lines"] / child["throughput_lines_cpu_s"]),
        "unsent_after_flush": child["unsent"],
    }


def _write_lines(path: Path, count: int, start: int) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    with path.open("a") as out:
        for n in range(start, start + count):
            out.write(LINE.format(time=stamp, n=n))


