"""NVML collector tests, replayed from a recording of an 8x H100 node (data/nvml/h100x8.json).

`ReplayNvml` answers pynvml's calls from a recording in the shape bench/nvml_record.py
writes from real GPUs; its constants and error classes are pynvml's own.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest
from collector_fakes import RecordingBus, Tally
from vigil.collectors.nvml import NO_GPU, NvmlCollector
from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_rules import LogRuleDetector

from vigil.bus import Topic
from vigil.frames import MetricFrame
from vigil.otlp import LogBatch, MetricBatch, MetricSample, decode_logs, decode_metrics

NOW = 1_718_000_000.0
NODE = "gpu-a-017"
RECORDING = json.loads((Path(__file__).parent / "data" / "nvml" / "h100x8.json").read_text())
RECORDER = Path(__file__).parents[2] / "bench" / "nvml_record.py"
# The labels dcgm-exporter puts on every GPU series (and the simulator copies).
DCGM_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"}


class ReplayNvml:
    """pynvml's calls answered from a recording; handles are the GPU index plus one."""

    def __init__(self, recording: dict[str, Any]) -> None:
        self.recording = recording
        self.devices: list[dict[str, Any]] = recording["devices"]
        self.events = deque(recording.get("events", []))
        self.registered: set[int] = set()
        self.field_requests: list[tuple[int, list[int]]] = []
        self.asked: Counter[tuple[str, int]] = Counter()  # (function, GPU index)
        self.open_sets = 0
        self.initialised = False
        self._wake = threading.Event()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("nvmlDevice"):
            return partial(self._answer, name)
        return getattr(pynvml, name)  # constants, NVMLError and its subclasses

    def nvmlInit(self) -> None:
        _raise_if_error(self.recording.get("nvmlInit"))
        self.initialised = True

    def nvmlShutdown(self) -> None:
        assert self.initialised, "nvmlShutdown without nvmlInit"
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index + 1

    def nvmlDeviceRegisterEvents(self, handle: int, types: int, event_set: object) -> None:
        self._answer("nvmlDeviceRegisterEvents", handle, types, event_set)
        self.registered.add(handle)

    def nvmlDeviceGetFieldValues(self, handle: int, field_ids: list[int]) -> list[Any]:
        self.field_requests.append((handle - 1, list(field_ids)))
        recorded = self.devices[handle - 1]["nvmlDeviceGetFieldValues"]
        _raise_if_error(recorded)
        answers = []
        for field_id in field_ids:
            value = recorded[str(field_id)]
            failed = isinstance(value, dict)
            answers.append(SimpleNamespace(
                fieldId=field_id,
                nvmlReturn=getattr(pynvml, value["error"]) if failed else pynvml.NVML_SUCCESS,
                valueType=(pynvml.NVML_VALUE_TYPE_DOUBLE if isinstance(value, float)
                           else pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG),
                value=SimpleNamespace(dVal=value, ullVal=value)))
        return answers

    def nvmlEventSetCreate(self) -> object:
        self.open_sets += 1
        return object()

    def nvmlEventSetFree(self, event_set: object) -> None:
        self.open_sets -= 1

    def nvmlEventSetWait(self, event_set: object, timeout_ms: int) -> SimpleNamespace:
        if self.events and self.events[0]["gpu"] + 1 in self.registered:
            event = self.events.popleft()
            return SimpleNamespace(device=event["gpu"] + 1, eventType=event["eventType"],
                                   eventData=event["eventData"], gpuInstanceId=0xFFFFFFFF,
                                   computeInstanceId=0xFFFFFFFF)
        self._wake.wait(timeout_ms / 1000)  # as NVML blocks until its timeout
        raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)

    def _answer(self, name: str, handle: int, *args: Any) -> Any:
        self.asked[(name, handle - 1)] += 1
        answer = self.devices[handle - 1][name]
        _raise_if_error(answer)
        if args:
            # Same key as bench/nvml_record.py: the numbers and strings after the handle.
            answer = answer[",".join(str(a) for a in args if isinstance(a, int | str))]
            _raise_if_error(answer)
        return _namespace(answer)


def _raise_if_error(answer: Any) -> None:
    if isinstance(answer, dict) and set(answer) == {"error"}:
        raise pynvml.NVMLError(getattr(pynvml, answer["error"]))


def _namespace(answer: Any) -> Any:
    if isinstance(answer, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in answer.items()})
    return answer


MakeCollector = Callable[..., NvmlCollector]


@pytest.fixture
def make_collector(bus: RecordingBus, tally: Tally) -> MakeCollector:
    def make(nvml: Any, event_wait_ms: int = 20) -> NvmlCollector:
        collector = NvmlCollector(bus, NODE, interval_s=3600.0, nvml=nvml,
                                  event_wait_ms=event_wait_ms)
        collector.counters = tally.component
        return collector

    return make


@pytest.fixture
def replay() -> ReplayNvml:
    return ReplayNvml(copy.deepcopy(RECORDING))


def _metrics(bus: RecordingBus, index: int = -1) -> MetricBatch:
    message = bus.published[index]
    assert (message.topic, message.key) == (Topic.METRICS, NODE)
    (batch,) = decode_metrics(message.value)
    return batch


def _by_gpu(batch: MetricBatch) -> dict[str, dict[str, MetricSample]]:
    gpus: dict[str, dict[str, MetricSample]] = {}
    for sample in batch.samples:
        gpus.setdefault(sample.labels["gpu"], {})[sample.name] = sample
    return gpus


# --- metrics --------------------------------------------------------------------------------


def test_dcgm_exporter_names_and_labels(make_collector: MakeCollector, replay: ReplayNvml,
                                        bus: RecordingBus) -> None:
    collector = make_collector(replay)
    assert collector.open()
    collector.collect(NOW)

    batch = _metrics(bus)
    assert batch.resource == {"host.name": NODE, "vigil.entity": f"node:{NODE}"}
    gpus = _by_gpu(batch)
    assert set(gpus) == {"0", "1", "2", "3", "4", "6", "7"}  # GPU 5 fell off the bus
    gpu0 = gpus["0"]
    assert gpu0["DCGM_FI_DEV_GPU_TEMP"].labels == {
        "vigil.entity": f"gpu:{NODE}/0", "gpu": "0",
        "UUID": "GPU-3f2a9c41-7b0e-5d18-a6c2-91e4b07d5f13",
        "pci_bus_id": "00000000:18:00.0", "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3", "Hostname": NODE}
    values = {name: sample.value for name, sample in gpu0.items()}
    assert values == {
        "DCGM_FI_DEV_GPU_TEMP": 61, "DCGM_FI_DEV_MEMORY_TEMP": 68,
        "DCGM_FI_DEV_SM_CLOCK": 1980, "DCGM_FI_DEV_MEM_CLOCK": 2619,
        "DCGM_FI_DEV_POWER_USAGE": 641.223, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 41233120455,
        "DCGM_FI_DEV_GPU_UTIL": 98, "DCGM_FI_DEV_MEM_COPY_UTIL": 41,
        "DCGM_FI_DEV_FB_USED": 74312, "DCGM_FI_DEV_FB_FREE": 81559 - 74312 - 1,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 0,
        "DCGM_FI_DEV_POWER_VIOLATION": 41200000000, "DCGM_FI_DEV_THERMAL_VIOLATION": 0,
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0,
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 0, "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0,
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": 12, "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": 0,
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 0, "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0,
        "DCGM_FI_DEV_ROW_REMAP_PENDING": 0, "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0,
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": 0,
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL": 0,
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL": 0,
        "DCGM_FI_DEV_XID_ERRORS": 0,
    }
    assert {s.timestamp for s in batch.samples} == {NOW}
    assert all(set(s.labels) == DCGM_LABELS | {"vigil.entity"} for s in batch.samples)


def test_kinds_follow_dcgm_exporter(make_collector: MakeCollector, replay: ReplayNvml,
                                    bus: RecordingBus) -> None:
    collector = make_collector(replay)
    collector.open()
    collector.collect(NOW)

    kinds = {s.name: s.kind for s in _metrics(bus).samples}
    assert kinds["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] == "counter"
    assert kinds["DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"] == "counter"
    assert kinds["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == "counter"
    assert kinds["DCGM_FI_DEV_THERMAL_VIOLATION"] == "counter"
    assert kinds["DCGM_FI_DEV_ROW_REMAP_FAILURE"] == "gauge"
    assert kinds["DCGM_FI_DEV_XID_ERRORS"] == "gauge"
    assert kinds["DCGM_FI_DEV_GPU_TEMP"] == "gauge"


def test_memory_trouble_throttling_and_nvlink_errors(make_collector: MakeCollector,
                                                     replay: ReplayNvml,
                                                     bus: RecordingBus) -> None:
    collector = make_collector(replay)
    collector.open()
    collector.collect(NOW)

    gpus = {gpu: {n: s.value for n, s in series.items()}
            for gpu, series in _by_gpu(_metrics(bus)).items()}
    assert gpus["2"]["DCGM_FI_DEV_ROW_REMAP_FAILURE"] == 1
    assert gpus["2"]["DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"] == 8
    assert gpus["2"]["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] == 2
    assert gpus["3"]["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"] == 0x20  # software thermal slowdown
    assert gpus["3"]["DCGM_FI_DEV_SM_CLOCK"] == 1410
    assert gpus["3"]["DCGM_FI_DEV_THERMAL_VIOLATION"] == 183e9
    assert gpus["6"]["DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL"] == 1342
    assert [gpu for gpu, values in gpus.items() if values["DCGM_FI_DEV_ROW_REMAP_FAILURE"]] == ["2"]


def test_not_supported_is_left_out_and_not_asked_again(
    make_collector: MakeCollector, replay: ReplayNvml, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    power_policy = str(pynvml.NVML_PERF_POLICY_POWER)
    replay.devices[4]["nvmlDeviceGetViolationStatus"][power_policy] = {
        "error": "NVML_ERROR_NOT_SUPPORTED"}
    collector = make_collector(replay)
    collector.open()
    collector.collect(NOW)
    collector.collect(NOW + 10)

    gpus = _by_gpu(_metrics(bus))
    assert "DCGM_FI_DEV_POWER_VIOLATION" not in gpus["4"]
    assert "DCGM_FI_DEV_THERMAL_VIOLATION" in gpus["4"]
    assert replay.asked[("nvmlDeviceGetViolationStatus", 4)] == 1 + 2  # power once, thermal twice
    names = {s.name for s in _metrics(bus).samples}
    assert not {"DCGM_FI_DEV_RETIRED_SBE", "DCGM_FI_DEV_RETIRED_DBE", "DCGM_FI_DEV_RETIRED_PENDING",
                "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL"} & names
    first, second = ([ids for gpu, ids in replay.field_requests if gpu == 0][:2])
    left_out = {pynvml.NVML_FI_DEV_RETIRED_SBE, pynvml.NVML_FI_DEV_RETIRED_DBE,
                pynvml.NVML_FI_DEV_RETIRED_PENDING,
                pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL}
    assert set(first) - set(second) == left_out
    assert tally.totals()["errored"] == 2  # the lost GPU, once per interval; nothing else
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.getMessage() != "GPU lost: NVML cannot reach it"]


def test_a_lost_gpu_is_left_out_counted_and_logged_once(
    make_collector: MakeCollector, replay: ReplayNvml, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = make_collector(replay)
    collector.open()
    with caplog.at_level(logging.INFO, logger="vigil.collectors.nvml"):
        collector.collect(NOW)
        collector.collect(NOW + 10)

    assert "5" not in _by_gpu(_metrics(bus))
    lost = [r for r in caplog.records if r.getMessage() == "GPU lost: NVML cannot reach it"]
    assert [(r.gpu, r.pci_bus_id) for r in lost] == [("5", "00000000:AB:00.0")]  # type: ignore[attr-defined]
    assert tally.totals()["errored"] == 2
    samples = len(_metrics(bus).samples)
    assert tally.totals()["sent"] == tally.totals()["received"] == 2 * samples


def test_a_failing_query_is_counted_logged_once_and_skipped(
    make_collector: MakeCollector, replay: ReplayNvml, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    replay.devices[0]["nvmlDeviceGetPowerUsage"] = {"error": "NVML_ERROR_UNKNOWN"}
    replay.devices[1]["nvmlDeviceGetFieldValues"]["3"] = {"error": "NVML_ERROR_NO_PERMISSION"}
    collector = make_collector(replay)
    collector.open()
    collector.collect(NOW)
    collector.collect(NOW + 10)

    gpus = _by_gpu(_metrics(bus))
    assert "DCGM_FI_DEV_POWER_USAGE" not in gpus["0"]
    assert "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL" not in gpus["1"]
    assert "DCGM_FI_DEV_POWER_USAGE" in gpus["1"] and "DCGM_FI_DEV_GPU_TEMP" in gpus["0"]
    failed = [(r.gpu, r.query) for r in caplog.records  # type: ignore[attr-defined]
              if r.getMessage() == "NVML query failed"]
    assert failed == [("0", "power"), ("1", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")]
    assert tally.totals()["errored"] == 2 * 2 + 2  # two failures and the lost GPU, twice


# --- Xid events -----------------------------------------------------------------------------


def test_an_xid_becomes_the_kernels_line_and_the_log_rules_match_it(
    make_collector: MakeCollector, replay: ReplayNvml, bus: RecordingBus, tally: Tally,
    library: FaultLibrary,
) -> None:
    collector = make_collector(replay)
    collector.open()

    assert collector.wait_for_xid(10)
    assert not collector.wait_for_xid(10)  # nothing more queued: a timeout

    (message,) = bus.published
    assert (message.topic, message.key) == (Topic.LOGS, NODE)
    (batch,) = decode_logs(message.value)
    (line,) = batch.lines
    assert line.body.startswith("NVRM: Xid (PCI:0000:ab:00): 79, pid='<unknown>', ")
    assert line.attributes == {"log.source": "nvml"}
    assert batch.resource == {"host.name": NODE, "vigil.entity": f"node:{NODE}"}
    assert tally.totals()["sent"] == 1
    # The detector learned GPU 5's address from its metrics before it fell off the bus.
    detector = LogRuleDetector(library)
    labels = {"gpu": "5", "pci_bus_id": "00000000:AB:00.0"}
    detector.observe_metrics(MetricFrame.from_batches([MetricBatch(batch.resource, [
        MetricSample("DCGM_FI_DEV_GPU_TEMP", 60.0, labels, NOW)])]), NOW)
    (alert,) = detector.observe_logs(LogBatch(batch.resource, [line]), NOW)
    assert (alert.fault_id, alert.entity) == ("gpu.xid.79", f"gpu:{NODE}/5")


def test_the_last_xid_is_reported_as_dcgm_does(make_collector: MakeCollector,
                                               replay: ReplayNvml, bus: RecordingBus) -> None:
    replay.events.append({"gpu": 2, "eventType": pynvml.nvmlEventTypeXidCriticalError,
                          "eventData": 48})
    collector = make_collector(replay)
    collector.open()
    while collector.wait_for_xid(10):
        pass
    collector.collect(NOW)

    xids = {s.labels["gpu"]: s.value for s in _metrics(bus).samples
            if s.name == "DCGM_FI_DEV_XID_ERRORS"}
    assert xids == {"0": 0, "1": 0, "2": 48, "3": 0, "4": 0, "6": 0, "7": 0}


def test_started_it_publishes_metrics_and_xids_and_stops_promptly(
    make_collector: MakeCollector, replay: ReplayNvml, bus: RecordingBus,
) -> None:
    collector = make_collector(replay, event_wait_ms=50)
    collector.start()
    try:
        deadline = time.monotonic() + 5
        while len(bus.published) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        started = time.monotonic()
        collector.shutdown()
    assert time.monotonic() - started < 1
    assert sorted(str(m.topic) for m in bus.published) == [Topic.LOGS, Topic.METRICS]
    assert (replay.initialised, replay.open_sets) == (False, 0)  # NVML and the event set let go


# --- no GPU ----------------------------------------------------------------------------------


@pytest.mark.parametrize("recording", [
    {"nvmlInit": {"error": "NVML_ERROR_LIBRARY_NOT_FOUND"}, "devices": []},
    {"nvmlInit": {"error": "NVML_ERROR_DRIVER_NOT_LOADED"}, "devices": []},
    {"devices": []},
], ids=["no library", "no driver", "no devices"])
def test_without_a_gpu_it_says_so_once_and_stays_off(
    make_collector: MakeCollector, bus: RecordingBus, tally: Tally,
    caplog: pytest.LogCaptureFixture, recording: dict[str, Any],
) -> None:
    replay = ReplayNvml(recording)
    collector = make_collector(replay)

    with caplog.at_level(logging.INFO, logger="vigil.collectors.nvml"):
        collector.start()
        collector.shutdown()

    assert [r.getMessage() for r in caplog.records] == [NO_GPU]
    assert bus.published == []
    assert tally.totals()["errored"] == 0
    assert not replay.initialised


def test_a_broken_driver_is_an_error_not_an_absence(
    make_collector: MakeCollector, tally: Tally, caplog: pytest.LogCaptureFixture,
) -> None:
    collector = make_collector(ReplayNvml({"nvmlInit": {"error": "NVML_ERROR_UNKNOWN"},
                                           "devices": []}))

    assert not collector.open()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "NVML did not start; NVML collector off")]
    assert tally.totals()["errored"] == 1


def test_real_nvml_without_a_gpu_stays_off(bus: RecordingBus, tally: Tally,
                                           caplog: pytest.LogCaptureFixture) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver; test_nvml_real.py covers it")
    collector = NvmlCollector(bus, NODE, interval_s=3600.0)
    collector.counters = tally.component

    with caplog.at_level(logging.INFO, logger="vigil.collectors.nvml"):
        collector.start()
        collector.shutdown()

    assert [r.getMessage() for r in caplog.records] == [NO_GPU]
    assert bus.published == []
    assert tally.totals()["errored"] == 0


# --- the recorder --------------------------------------------------------------------------


def test_the_recorder_writes_what_the_replay_reads(replay: ReplayNvml,
                                                   bus: RecordingBus) -> None:
    spec = importlib.util.spec_from_file_location("nvml_record", RECORDER)
    assert spec is not None and spec.loader is not None
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    proxy = recorder.RecordingNvml(replay)
    collector = NvmlCollector(bus, NODE, interval_s=3600.0, nvml=proxy)
    assert collector.open()
    collector.collect(NOW)
    while collector.wait_for_xid(10):
        pass
    collector.close()

    recorded = json.loads(json.dumps({"devices": proxy.devices, "events": proxy.events}))
    assert recorded["events"] == RECORDING["events"]
    for index, (got, want) in enumerate(zip(recorded["devices"], RECORDING["devices"],
                                            strict=True)):
        if index == 5:  # lost: asked until the first GPU_IS_LOST, so only part was recorded
            assert {name: want[name] for name in got} == got
            assert got["nvmlDeviceGetTemperature"] == {"0": {"error": "NVML_ERROR_GPU_IS_LOST"}}
        else:
            assert got == want, index
