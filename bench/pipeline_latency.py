"""How fast Vigil starts and how fast an injected fault becomes an incident, end to end.

Starts the real `vigil up` (embedded Tansu broker, simulator, collectors, detection,
incident store) in a scratch folder, injects faults one at a time through `vigil sim
inject`, and times each from the moment its kernel-log line is written until its alert is recorded
against an incident in the store.
Prints figures; asserts nothing.

    .venv/bin/python bench/pipeline_latency.py --faults 20 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import print_figures  # bench/, this script's own folder
from vigil.ui.runstate import RunState, read_state

from vigil.store import Store

VIGIL = str(Path(sys.executable).with_name("vigil"))
FAULTS = ["gpu.xid.79", "gpu.xid.48", "gpu.xid.74", "gpu.xid.119", "gpu.xid.95", "gpu.xid.64"]


def _start(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], RunState, float]:
    t0 = time.monotonic()
    process = subprocess.Popen([VIGIL, "up"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while time.monotonic() - t0 < 120:
        state = read_state(data_dir)
        if state is not None and state.ready_at is not None:
            return process, state, time.monotonic() - t0
        if process.poll() is not None:
            sys.exit(f"vigil up exited with {process.returncode}; see {data_dir}/vigil.log")
        time.sleep(0.05)
    process.kill()
    sys.exit("vigil up was not ready within 120 s")


def _time_one(store: Store, env: dict[str, str], fault: str, target: str) -> tuple[float, float]:
    """Seconds from the fault's log line being written to its alert being in the store
    (polled every 20 ms), and from that line to the detector's alert."""
    done = subprocess.run([VIGIL, "sim", "inject", fault, "--target", target, "--json"],
                          env=env, check=True, capture_output=True, text=True)
    injected_at = float(json.loads(done.stdout)["injected_at"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for alert in store.alerts(limit=50):
            if alert.fault_id == fault and alert.entity == target:
                return time.time() - injected_at, alert.detected_at - alert.observed_at
        time.sleep(0.02)
    raise SystemExit(f"{fault} on {target} was not recorded within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=20, help="faults to inject (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        data_dir = Path(tmp)
        env = dict(os.environ, VIGIL_DATA_DIR=str(data_dir), VIGIL_CONSOLE_ENABLED="false",
                   VIGIL_TELEMETRY_PORT="0")
        env.pop("VIGIL_KAFKA_BOOTSTRAP", None)
        process, state, ready_s = _start(data_dir, env)
        try:
            store = Store.open(state.db_url)
            stored, detected = [], []
            for i in range(args.faults):
                # A different node and GPU each time, so every fault is a fresh alert.
                target = f"gpu:gpu-a-{i % 4 + 1:03d}/{(i // 4) % 8}"
                s, d = _time_one(store, env, FAULTS[i % len(FAULTS)], target)
                stored.append(s)
                detected.append(d)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    figures = {
        "faults": args.faults,
        "up_ready_s": round(ready_s, 2),
        "fault_to_incident_median_s": round(statistics.median(stored), 3),
        "fault_to_incident_p95_s": round(_p95(stored), 3),
        "fault_to_incident_max_s": round(max(stored), 3),
        "fault_to_alert_median_s": round(statistics.median(detected), 3),
        "fault_to_alert_max_s": round(max(detected), 3),
    }
    print_figures(figures, args.json)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
