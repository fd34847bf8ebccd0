"""The NVML collector against the real library and GPUs; skipped where there is no NVIDIA GPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pynvml  # type: ignore[import-untyped]
import pytest
from collector_fakes import RecordingBus, Tally
from test_nvml import ReplayNvml
from vigil.collectors.nvml import NvmlCollector

from vigil.bus import Topic
from vigil.otlp import decode_metrics

RECORDER = Path(__file__).parents[2] / "bench" / "nvml_record.py"
BASIC = {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_UTIL",
         "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_SM_CLOCK",
         "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_XID_ERRORS"}


def _gpus_here() -> int:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


GPUS = _gpus_here()
pytestmark = pytest.mark.skipif(GPUS == 0, reason="no NVIDIA GPU and driver on this machine")


def test_one_interval_gives_every_gpu_its_basic_fields(bus: RecordingBus, tally: Tally) -> None:
    collector = NvmlCollector(bus, "this-node", interval_s=3600.0)
    collector.counters = tally.component
    assert collector.open()
    try:
        started = time.process_time()
        collector.collect(time.time())
        cpu_s = time.process_time() - started
    finally:
        collector.close()

    (message,) = bus.published
    assert (message.topic, message.key) == (Topic.METRICS, "this-node")
    (batch,) = decode_metrics(message.value)
    by_gpu: dict[str, dict[str, float]] = {}
    for sample in batch.samples:
        by_gpu.setdefault(sample.labels["gpu"], {})[sample.name] = sample.value
        assert re.fullmatch(r"GPU-[0-9a-f-]{36}", sample.labels["UUID"]), sample.labels
        assert re.fullmatch(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.\d", sample.labels["pci_bus_id"])
    assert set(by_gpu) == {str(i) for i in range(GPUS)}
    for gpu, values in by_gpu.items():
        assert set(values) >= BASIC, (gpu, BASIC - set(values))
        assert 0 < values["DCGM_FI_DEV_GPU_TEMP"] < 120
        assert values["DCGM_FI_DEV_POWER_USAGE"] > 0
        assert 0 <= values["DCGM_FI_DEV_GPU_UTIL"] <= 100
        assert values["DCGM_FI_DEV_SM_CLOCK"] > 0
    assert tally.totals()["errored"] == 0
    print(f"{GPUS} GPUs, {len(batch.samples)} samples, {cpu_s * 1000:.1f} ms CPU per interval")


def test_started_against_the_real_library_it_stops_promptly(bus: RecordingBus) -> None:
    collector = NvmlCollector(bus, "this-node", interval_s=3600.0, event_wait_ms=200)
    collector.start()
    try:
        deadline = time.monotonic() + 30
        while not bus.published and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        collector.shutdown()
    assert bus.published
    assert time.monotonic() - started < 2


def test_a_recording_of_this_machine_replays_the_same(tmp_path: Path, bus: RecordingBus) -> None:
    out = tmp_path / "recorded.json"
    subprocess.run([sys.executable, str(RECORDER), "--out", str(out)], check=True, timeout=120)
    replay = NvmlCollector(bus, "this-node", interval_s=3600.0,
                           nvml=ReplayNvml(json.loads(out.read_text())))

    assert replay.open()
    replay.collect(time.time())
    (batch,) = decode_metrics(bus.published[0].value)
    assert {s.labels["gpu"] for s in batch.samples} == {str(i) for i in range(GPUS)}
    assert {s.name for s in batch.samples} >= BASIC
