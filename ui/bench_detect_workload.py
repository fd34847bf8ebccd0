"""The telemetry `vigil bench detect` feeds the detectors: real shapes, enough of them.

Metrics are the simulator's own exporters (dcgm-exporter, node-exporter and the trainer's
/metrics for every node), scraped and encoded as the scrape collector does, one OTLP message
per node per interval. The simulator formats and parses text, some 12,000 samples a second,
so it runs a small cluster and each of its nodes is sent as `copies` nodes under other host
names: the same label sets and values, distinct series.

Log lines are what a training node writes most (iteration lines, NCCL INFO lines, kernel
noise) with a fault line from the library's examples one line in a thousand, sent in
messages of `lines_per_message`, as the log collector batches a busy file.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vigil.collectors.prometheus_scrape import parse_exposition
from vigil.diagnosis.library import EXAMPLE_VALUES, load_library
from vigil.sim.cluster import KERNEL_NOISE, SimCluster
from vigil.sim.logs import KERNEL, TRAINING, format_line
from vigil.sim.topology import ClusterSpec

from vigil.otlp import LogBatch, LogLine, MetricBatch, MetricSample, encode_logs, encode_metrics

WARMUP_ROUNDS = 5  # scrapes (and for logs, one message a node) first seen, then measured


@dataclass(frozen=True, slots=True)
class Message:
    node: str
    payload: bytes
    count: int  # samples or lines in it
    warmup: bool  # handled before the clock starts: a series' first sight costs more


def metric_messages(nodes: int, rounds: int, copies: int, start: float,
                    interval_s: float = 10.0, seed: int = 7) -> list[Message]:
    """`rounds` scrapes of `nodes` x `copies` nodes from `start`, in time order."""
    library = load_library()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-detect-") as tmp:
        racks = max(1, nodes // 16)
        cluster = SimCluster(library, Path(tmp), spec=ClusterSpec(
            racks=racks, nodes_per_rack=max(1, nodes // racks), gpus_per_node=8,
            jobs=max(1, nodes // 8), seed=seed), now=start)
        out = []
        for round_ in range(rounds):
            now = start + round_ * interval_s
            cluster.step(now)
            for node in cluster.nodes:
                samples = _scrape(cluster, node, now)
                for copy in range(copies):
                    host = node if copy == 0 else f"{node}-c{copy}"
                    batch = MetricBatch({"host.name": host, "vigil.entity": f"node:{host}"},
                                        samples)
                    out.append(Message(host, encode_metrics([batch]), len(samples),
                                       round_ < WARMUP_ROUNDS))
        cluster.logs.close()
    return out


def _scrape(cluster: SimCluster, node: str, now: float) -> list[MetricSample]:
    texts = (cluster.exposition(node), cluster.node_exporter(node), cluster.trainer(node) or "")
    return [sample for text in texts for sample in parse_exposition(text, now)]


def log_messages(nodes: int, lines: int, start: float, lines_per_message: int = 2000,
                 seed: int = 7) -> list[Message]:
    """About `lines` lines from `nodes` nodes from `start`, 100 a second a node, in order."""
    rng = random.Random(seed)
    faults = [m.example.format(**EXAMPLE_VALUES) for m in load_library() if m.example]
    per_node = max(1, lines // nodes)
    out = []
    counter = itertools.count()
    for offset in range(0, per_node, lines_per_message):
        for n in range(nodes):
            host = f"gpu-b-{n:03d}"
            batch = [_line(host, start + (offset + i) * 0.01, rng, faults, next(counter))
                     for i in range(min(lines_per_message, per_node - offset))]
            payload = encode_logs([LogBatch({"host.name": host, "vigil.entity": f"node:{host}"},
                                            batch)])
            out.append(Message(host, payload, len(batch), offset == 0))
    return out


def _line(host: str, now: float, rng: random.Random, faults: list[str], n: int) -> LogLine:
    if n % 1000 == 999:
        return LogLine(format_line(KERNEL, host, now, faults[(n // 1000) % len(faults)]), now,
                       {"log.file.path": "/var/log/kern.log"})
    pick = rng.random()
    if pick < 0.5:
        message = (f"[Rank {rng.randrange(64)}] iteration {n} | step time "
                   f"{rng.uniform(1.9, 2.1):.3f} s | loss {rng.uniform(2.0, 2.5):.4f} | "
                   f"tokens/s {rng.randrange(60000, 70000)}")
        return LogLine(format_line(TRAINING, host, now, message), now,
                       {"log.file.path": "/var/log/train.log"})
    if pick < 0.9:
        message = (f"{host}:{rng.randrange(1000, 99999)}:{rng.randrange(1000, 99999)} "
                   f"[{rng.randrange(8)}] NCCL INFO Channel {rng.randrange(32):02d}/0 : "
                   f"{rng.randrange(64)}[{rng.randrange(8)}] -> {rng.randrange(64)}"
                   f"[{rng.randrange(8)}] via P2P/IPC")
        return LogLine(format_line(TRAINING, host, now, message), now,
                       {"log.file.path": "/var/log/train.log"})
    message = KERNEL_NOISE[rng.randrange(len(KERNEL_NOISE))]
    return LogLine(format_line(KERNEL, host, now, message), now,
                   {"log.file.path": "/var/log/kern.log"})
