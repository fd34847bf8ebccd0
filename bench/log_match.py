"""How many log lines a second the library's rules screen, against the obvious baseline.

The baseline tests each rule literal with `in`, one after another; `LogMatcher` finds every
literal of a line in one Aho-Corasick pass. Both run in this process over the same lines: a
steady training log with one fault line in a thousand (an Xid, an NCCL error, a soft lockup).

    .venv/bin/python bench/log_match.py [--lines 200000] [--json]
"""

from __future__ import annotations

import argparse
import time

from figures import print_figures  # bench/, this script's own folder
from vigil.diagnosis.library import load_library
from vigil.diagnosis.log_match import LogMatcher

FAULTS = (
    "NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.",
    "NCCL WARN NET/IB : Got completion from peer 10.0.0.7<51522> with status=12 opcode=0",
    "watchdog: BUG: soft lockup - CPU#12 stuck for 23s! [python:4242]",
)


def lines(count: int) -> list[str]:
    out = []
    for i in range(count):
        if i % 1000 == 999:
            out.append(FAULTS[(i // 1000) % len(FAULTS)])
        else:
            out.append(f"2024-06-10T06:13:20Z n1 trainer: step {i} loss {2.5 - i / 1e6:.4f} "
                       f"tokens/s {41000 + i % 97} lr 3.0e-4")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    library = load_library()
    matcher = LogMatcher(library)
    rules = [(s.contains, s.regex) for m in library for s in m.signals.logs]
    text = lines(args.lines)

    t0 = time.perf_counter()
    baseline_hits = sum(1 for line in text for literal, regex in rules
                        if literal in line and regex.search(line))
    baseline_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits = sum(1 for line in text for _ in matcher.matches(line))
    matcher_s = time.perf_counter() - t0
    figures = {
        "modes": len(library), "log_signals": len(rules), "lines": args.lines,
        "hits": hits, "baseline_hits": baseline_hits,
        "baseline_lines_per_s": round(args.lines / baseline_s),
        "matcher_lines_per_s": round(args.lines / matcher_s),
        "speedup": round(baseline_s / matcher_s, 1),
    }
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
