"""`vigil bench detect`: what one detection process sustains, and what a second one adds.

Telemetry (see `bench_detect_workload`) is published to a real Kafka (the embedded Tansu)
first, metrics and logs on topics of their own with four partitions, nodes spread evenly.
Then, for each topic, one child process reads all four partitions, and afterwards two
children read two each, at the same time, each from a fresh start. A child runs the
detection stage's own code on every record (see `bench_detect_child`). The rate is
samples (or lines) / the wall time from the first record any child handled to the last;
`scaling` is the two-process rate / the one-process rate. The one-process child also
replays its records through the protobuf runtime's decoder, in memory: the baseline that
`speedup` compares with (it leaves Kafka out, so it flatters the baseline a little). The
first scrapes of every node (and the first log message of each) warm the caches and the
detectors up before the clock starts: a series' first sight costs more than its thousandth,
and a running cluster is almost all thousandths.
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

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from vigil.ui.bench_detect_workload import Message, log_messages, metric_messages

from vigil.broker import EmbeddedBroker
from vigil.bus import Topic

PARTITIONS = 4
TOPICS = {"metrics": str(Topic.METRICS), "logs": str(Topic.LOGS)}


def run(detectors: list[str], nodes: int = 32, rounds: int = 30, copies: int = 4,
        lines: int = 600_000, progress: Callable[[str], None] = lambda what: None,
        ) -> dict[str, Any]:
    progress(f"simulating {nodes} nodes for {rounds} scrapes")
    # Telemetry as recent as live telemetry would be: it ends about now.
    now = time.time()
    workloads = {"metrics": metric_messages(nodes, rounds, copies, now - rounds * 10.0),
                 "logs": log_messages(nodes * copies, lines,
                                      now - lines / (nodes * copies) / 100.0)}
    figures: dict[str, Any] = {"detectors": ",".join(detectors), "partitions": PARTITIONS,
                               "metric_nodes": nodes * copies, "log_nodes": nodes * copies}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-detect-") as tmp:
        broker = EmbeddedBroker(Path(tmp) / "tansu.log")
        progress("starting Kafka")
        broker.start()
        try:
            timed_from = {}
            for kind, messages in workloads.items():
                progress(f"publishing {len(messages)} {kind} messages")
                timed_from[kind] = _publish(broker.bootstrap, TOPICS[kind], messages)
            for kind, messages in workloads.items():
                unit = "samples" if kind == "metrics" else "lines"
                total = sum(m.count for m in messages if not m.warmup)
                progress(f"{kind}: one process")
                (one,) = _children(broker.bootstrap, TOPICS[kind], detectors, [[0, 1, 2, 3]],
                                   timed_from[kind], baseline=True)
                progress(f"{kind}: two processes")
                two = _children(broker.bootstrap, TOPICS[kind], detectors, [[0, 2], [1, 3]],
                                timed_from[kind], baseline=False)
                one_rate = total / (one["end"] - one["start"])
                two_rate = total / (max(c["end"] for c in two) - min(c["start"] for c in two))
                baseline_rate = total / one["baseline_s"]
                figures |= {
                    f"{kind}_messages": len(messages), f"{kind}_{unit}": total,
                    f"{kind}_bytes": sum(len(m.payload) for m in messages),
                    f"{kind}_{unit}_per_s": round(one_rate),
                    f"{kind}_cpu_us_per_{unit[:-1]}": round(one["cpu_s"] / total * 1e6, 3),
                    f"{kind}_{unit}_per_s_2_processes": round(two_rate),
                    f"{kind}_scaling_2_processes": round(two_rate / one_rate, 2),
                    f"{kind}_baseline_{unit}_per_s": round(baseline_rate),
                    f"{kind}_speedup_vs_baseline": round(one_rate / baseline_rate, 2),
                    f"{kind}_alerts": one["alerts"],
                }
        finally:
            broker.shutdown()
    return figures


def _publish(bootstrap: str, topic: str, messages: list[Message]) -> dict[int, int]:
    """Publish; the offset in each partition at which the measured messages begin."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             max_request_size=16 << 20, batch_size=1 << 20)
    partition_of: dict[str, int] = {}
    warm = dict.fromkeys(range(PARTITIONS), 0)
    for message in messages:
        # nodes dealt round-robin: each partition carries the same share
        partition = partition_of.setdefault(message.node, len(partition_of) % PARTITIONS)
        producer.send(topic, value=message.payload, key=message.node.encode(),
                      partition=partition)
        warm[partition] += message.warmup  # warm-up messages come first in every partition
    producer.flush()
    producer.close()
    return warm


def _children(bootstrap: str, topic: str, detectors: list[str], shares: list[list[int]],
              timed_from: dict[int, int], baseline: bool,
              setup_s: float = 8.0) -> list[dict[str, Any]]:
    start_at = time.time() + setup_s  # time enough to import and load the library
    running = [subprocess.Popen(
        [sys.executable, "-m", "vigil.ui.bench_detect_child", json.dumps({
            "bootstrap": bootstrap, "topic": topic, "partitions": share,
            "detectors": detectors, "baseline": baseline, "start_at": start_at,
            "timed_from": {str(p): timed_from[p] for p in share},
            "data_dir": tempfile.mkdtemp(prefix="vigil-bench-detect-child-")})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for share in shares]
    results = []
    for child in running:
        stdout, stderr = child.communicate(timeout=900)
        if child.returncode != 0:
            raise RuntimeError(f"a measuring process failed:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results
