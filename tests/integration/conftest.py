"""Fixtures that run the real `vigil up` (embedded Tansu broker, simulator, pipeline, console)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from running import VIGIL, RunningVigil
from vigil.ui.runstate import read_state

from vigil.broker import free_port


@pytest.fixture(scope="session")
def vigil_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningVigil]:
    data_dir = tmp_path_factory.mktemp("vigil-data")
    env = dict(os.environ,
               # Besides the simulator: this machine's own /proc and /sys, and OTLP pushes.
               VIGIL_COLLECTORS_ENABLED='["sim", "host", "otlp"]',
               VIGIL_COLLECTORS_OTLP_PORT=str(free_port()),
               VIGIL_DATA_DIR=str(data_dir),
               VIGIL_CONSOLE_PORT="0",
               VIGIL_TELEMETRY_PORT="0",
               VIGIL_SIM_INTERVAL_S="1",
               VIGIL_COLLECTORS_SCRAPE_INTERVAL_S="1")
    env.pop("VIGIL_KAFKA_BOOTSTRAP", None)  # the point is the embedded broker
    t0 = time.monotonic()
    process = subprocess.Popen([VIGIL, "up"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    state = None
    while time.monotonic() - t0 < 90:
        state = read_state(data_dir)
        if state is not None and state.ready_at is not None:
            break
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"vigil up exited early:\n{output}")
        time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError("vigil up was not ready within 90 s")
    running = RunningVigil(data_dir, env, state, process, time.monotonic() - t0)
    yield running
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Stopped." in output
    assert read_state(data_dir) is None, "run state must be cleared on a clean stop"
    assert state.child_pids, "the embedded broker and console run as child processes"
    for pid in state.child_pids:
        assert not Path(f"/proc/{pid}").exists(), f"child process {pid} outlived vigil up"
