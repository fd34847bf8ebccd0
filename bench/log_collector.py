"""How many log lines a second the file collector sustains on one core.

Writes a file of pre-generated lines (~120 bytes, each with a leading RFC 3339 time like
journalctl's short-iso-precise output), then times one collector working through all of
it into a sink that only counts what it is given, OTLP encoding included. The same file is
read four ways, so the cost of each stage shows as a ratio in one run: the cursor alone
(read, split, decode), the collector, the collector with multi-line rules (python, nccl),
and the collector with a checkpoint. The process is pinned to one CPU.
Prints figures; asserts nothing.

    .venv/bin/python bench/log_collector.py [--lines 1000000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from vigil.collectors.log_cursor import FileCursor
from vigil.collectors.log_file import LogFileCollector, TailedFile

MESSAGES = [
    "NVRM: Xid (PCI:0000:3b:00): 13, pid=2712, name=python, Graphics SM Warp Exception",
    "mlx5_core 0000:5e:00.0 ibp94s0: Link up, speed 400Gb/s, full duplex, active width 4X",
    "step 1200 loss 2.3181 lr 3.0e-04 grad_norm 0.8731 tokens/s 412533 mfu 0.512 rank 3",
    "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0)",
]


class CountingSink:
    """A publisher that keeps only counts, so the figure is the collector's, not the sink's."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    def publish(
        self, topic: str, value: bytes, key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.messages += 1
        self.bytes += len(value)


def write_lines(path: Path, count: int) -> int:
    """Write `count` lines; returns the file's size in bytes."""
    base = 1_718_000_000
    with path.open("w") as f:
        for i in range(count):
            seconds, micros = divmod(i, 1_000_000)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + seconds))
            f.write(f"{stamp}.{micros:06d}+00:00 gpu-a-017 {MESSAGES[i % len(MESSAGES)]}\n")
    return path.stat().st_size


def time_cursor(path: Path) -> float:
    cursor = FileCursor(path, max_line_bytes=1 << 20, from_start=True)
    t0 = time.perf_counter()
    while cursor.read(time.time()).more:
        pass
    elapsed = time.perf_counter() - t0
    cursor.close()
    return elapsed


def time_collector(path: Path, multiline: tuple[str, ...], checkpoint: Path | None) -> float:
    sink = CountingSink()
    collector = LogFileCollector(sink, [TailedFile(path, "gpu-a-017", "kernel", multiline)],
                                 interval_s=3600.0, max_lines_per_message=2000, from_start=True,
                                 checkpoint=checkpoint)
    t0 = time.perf_counter()
    collector.collect(time.time())
    elapsed = time.perf_counter() - t0
    collector.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    with tempfile.TemporaryDirectory(prefix="vigil-bench-logs-") as scratch:
        path = Path(scratch) / "kern.log"
        size = write_lines(path, args.lines)
        runs = {
            "cursor_only": time_cursor(path),
            "collector": time_collector(path, (), None),
            "collector_multiline": time_collector(path, ("python", "nccl"), None),
            "collector_checkpoint": time_collector(path, (), Path(scratch) / "cp.json"),
        }
    figures: dict[str, float | int] = {
        "lines": args.lines, "bytes_per_line": round(size / args.lines), "cpu": cpu}
    for name, elapsed in runs.items():
        figures[f"{name}_s"] = round(elapsed, 2)
        figures[f"{name}_lines_per_s"] = round(args.lines / elapsed)
        figures[f"{name}_mb_per_s"] = round(size / elapsed / 1e6, 1)
    # Of the collector's time, the share spent after reading: line times, records, OTLP
    # encoding and publishing.
    figures["share_after_reading"] = round(1 - runs["cursor_only"] / runs["collector"], 2)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
