"""The measured side of `vigil bench collectors`: one node's collectors, in a process of their own.

It imports only what a node agent would (the collectors, the spool, the codec), so its memory
is what such an agent needs; `vigil.ui.bench_collectors` starts the sources and reads the
JSON this prints.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from vigil.collectors.base import Publisher
from vigil.collectors.host import HostCollector
from vigil.collectors.log_file import LogFileCollector, TailedFile
from vigil.collectors.prometheus_scrape import PrometheusScrapeCollector, ScrapeTarget
from vigil.collectors.spool import SpoolingPublisher

from vigil.bus import Topic
from vigil.otlp import decode_logs, decode_metrics
from vigil.settings import KafkaSettings

NODE = "bench-node"
THROUGHPUT_LINES = 200_000
THROUGHPUT_ROUNDS = 50


class _Keeping:
    """A publisher that keeps each payload for counting afterwards (decoding would be measured
    otherwise), and hands it on to the spool when there is one."""

    def __init__(self, inner: Publisher | None = None, keep: bool = True) -> None:
        self.inner = inner
        self.keep = keep
        self.payloads: list[tuple[str, bytes]] = []
        self.messages = 0
        self.bytes = 0

    def publish(self, topic: str, value: bytes, key: str | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        self.messages += 1
        self.bytes += len(value)
        if self.keep:
            self.payloads.append((topic, value))
        if self.inner is not None:
            self.inner.publish(topic, value, key, headers)

    def counts(self) -> tuple[int, int]:
        """(metric samples, log lines) in what was kept."""
        samples = sum(len(b.samples) for topic, value in self.payloads
                      if topic == Topic.METRICS for b in decode_metrics(value))
        lines = sum(len(b.lines) for topic, value in self.payloads
                    if topic == Topic.LOGS for b in decode_logs(value))
        return samples, lines


def _peak_rss_kb() -> int:
    """The process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: that survives
    exec, so a child started from a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(plan: dict[str, Any]) -> dict[str, Any]:
    base_rss_kb = _peak_rss_kb()
    spool: SpoolingPublisher | None = None
    if plan["bootstrap"]:
        spool = SpoolingPublisher.for_kafka(plan["bootstrap"], KafkaSettings(),
                                            Path(plan["spool"]))
        spool.start()
    sink = _Keeping(spool)
    dcgm = [ScrapeTarget(plan["dcgm"], NODE)]
    host = HostCollector(sink, NODE, 10.0)
    scrape = PrometheusScrapeCollector(sink, dcgm, 10.0)
    logs = LogFileCollector(sink, [TailedFile(Path(plan["kernel_log"]), NODE, "kernel")], 10.0,
                            2000, from_start=True)
    rounds = int(plan["rounds"])
    started = _cpu_s()
    for _ in range(rounds):
        now = time.time()
        for collector in (host, scrape, logs):
            collector.collect(now)
    if spool is not None:
        spool.flush(60.0)
    node_cpu = _cpu_s() - started
    peak_rss_kb = _peak_rss_kb()
    left = spool.stats() if spool is not None else None
    unsent = left.queued_messages + left.in_flight_messages + left.spooled_messages \
        if left is not None else 0
    for part in (scrape, logs, spool):
        if part is not None:
            part.shutdown()
    samples, lines = sink.counts()

    # The most one core sustains, with nothing behind the collectors.
    discard = _Keeping(keep=False)
    host = HostCollector(discard, NODE, 10.0)
    scrape = PrometheusScrapeCollector(discard, dcgm, 10.0)
    t0 = _cpu_s()
    for _ in range(THROUGHPUT_ROUNDS):
        now = time.time()
        host.collect(now)
        scrape.collect(now)
    metrics_cpu = _cpu_s() - t0
    scrape.shutdown()
    reader = LogFileCollector(discard, [TailedFile(Path(plan["throughput_log"]), NODE,
                                                   "kernel")], 10.0, 2000, from_start=True)
    t0 = _cpu_s()
    reader.collect(time.time())
    lines_cpu = _cpu_s() - t0
    reader.shutdown()
    return {"node_cpu_s": node_cpu, "node_samples": samples, "node_lines": lines,
            "node_messages": sink.messages, "node_bytes": sink.bytes, "unsent": unsent,
            "peak_rss_kb": peak_rss_kb, "base_rss_kb": base_rss_kb,
            "throughput_samples": THROUGHPUT_ROUNDS * samples / rounds,
            "throughput_samples_cpu_s": metrics_cpu,
            "throughput_lines": THROUGHPUT_LINES, "throughput_lines_cpu_s": lines_cpu}


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
