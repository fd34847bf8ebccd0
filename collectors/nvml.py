"""NVIDIA GPUs through NVML: dcgm-exporter's metrics every interval, Xid errors as they happen.

Metric names, kinds and labels are dcgm-exporter's, so a detector written for dcgm-exporter
(or for the simulator, which serves the same) works on either source. Xid events are waited
for on a thread of their own and published at once, written as the kernel writes them
(`NVRM: Xid (PCI:0000:18:00): 79, ...`), so the log rules that match kernel logs match them too.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pynvml  # type: ignore[import-untyped]
from vigil.collectors.base import PollingCollector, Publisher
from vigil.collectors.identity import tag_samples
from vigil.topology.identity import EntityResolver

from vigil.bus import Topic
from vigil.otlp import (
    LogBatch,
    LogLine,
    MetricBatch,
    MetricKind,
    MetricSample,
    encode_logs,
    encode_metrics,
)

log = logging.getLogger(__name__)

NO_GPU = "no NVIDIA GPU here; NVML collector off"
# nvmlInit errors that mean "this machine has no NVIDIA GPU", not "its GPUs are in trouble".
_ABSENT = ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED")
# "This GPU or driver has no such thing": the value is left out, quietly, and not asked again.
_UNSUPPORTED = ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")
# NVML field id (pynvml constant) -> dcgm-exporter metric and the kind dcgm-exporter declares.
FIELDS: tuple[tuple[str, str, MetricKind], ...] = (
    ("NVML_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_MEMORY_TEMP", "gauge"),
    ("NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter"),
    ("NVML_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter"),
    ("NVML_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter"),
    ("NVML_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter"),
    ("NVML_FI_DEV_ECC_SBE_AGG_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "counter"),
    ("NVML_FI_DEV_ECC_DBE_AGG_TOTAL", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "counter"),
    ("NVML_FI_DEV_RETIRED_SBE", "DCGM_FI_DEV_RETIRED_SBE", "counter"),
    ("NVML_FI_DEV_RETIRED_DBE", "DCGM_FI_DEV_RETIRED_DBE", "counter"),
    ("NVML_FI_DEV_RETIRED_PENDING", "DCGM_FI_DEV_RETIRED_PENDING", "counter"),
    ("NVML_FI_DEV_REMAPPED_COR", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter"),
    ("NVML_FI_DEV_REMAPPED_UNC", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter"),
    ("NVML_FI_DEV_REMAPPED_PENDING", "DCGM_FI_DEV_ROW_REMAP_PENDING", "gauge"),
    ("NVML_FI_DEV_REMAPPED_FAILURE", "DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge"),
    ("NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
     "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "counter"),
    ("NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
     "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "counter"),
    ("NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
     "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", "counter"),
    ("NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL",
     "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "counter"),
)
# nvmlValueType_t -> the member of the nvmlValue_t union that holds the number
_VALUE_MEMBER = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
_MIB = 1024 * 1024


class _GpuLost(Exception):
    """NVML answers GPU_IS_LOST: the GPU fell off the bus (Xid 79) and nothing more can be read."""


@dataclass(slots=True)
class Gpu:
    """One GPU as found at start: its handle and the labels dcgm-exporter gives its series."""

    index: int
    handle: Any
    labels: dict[str, str]
    unsupported: set[str] = field(default_factory=set)  # queries NVML said it cannot answer
    field_ids: list[int] = field(default_factory=list)  # fields still worth asking for
    lost: bool = False
    last_xid: int = 0

    @property
    def kernel_pci(self) -> str:
        """The address as the kernel writes it in Xid lines: 00000000:18:00.0 -> 0000:18:00."""
        domain, bus, device_function = self.labels["pci_bus_id"].split(":")
        return f"{domain[-4:]}:{bus}:{device_function.split('.')[0]}".lower()


class NvmlCollector(PollingCollector):
    """Per-GPU metrics every interval, one OTLP batch for the node; Xid events as log lines.

    Where there is no NVIDIA driver or GPU it says so once and stays off.
    """

    def __init__(
        self, bus: Publisher, node: str, interval_s: float, nvml: Any = pynvml,
        event_wait_ms: int = 500, name: str = "nvml",
    ) -> None:
        super().__init__(name, interval_s)
        self._resolver = EntityResolver()  # no graph on a node: ids built as the inventory does
        self.bus = bus
        self.node = node
        self.nvml = nvml
        self.event_wait_ms = event_wait_ms
        self.gpus: list[Gpu] = []
        self._events: Any = None
        self._open = False
        self._complained: set[tuple[int, str]] = set()  # (gpu, what) already logged
        self._resource = {"host.name": node, "vigil.entity": f"node:{node}"}
        self._absent = {getattr(nvml, code) for code in _ABSENT}
        self._unsupported = {getattr(nvml, code) for code in _UNSUPPORTED}
        self._fields = {getattr(nvml, const): (metric, kind) for const, metric, kind in FIELDS}

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        if not self.open():
            return
        watcher = None
        if self._events is not None:
            watcher = threading.Thread(target=self._watch_xids, name=f"{self.name}-xid",
                                       daemon=True)
            watcher.start()
        try:
            super().run()
        finally:
            if watcher is not None:
                watcher.join()
            self.close()

    def open(self) -> bool:
        """Start NVML, find the GPUs and subscribe to their Xid events; False: stay off."""
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            if exc.value in self._absent:
                log.info(NO_GPU, extra={"reason": str(exc)})
            else:
                log.error("NVML did not start; NVML collector off", extra={"error": str(exc)})
                self.counters.add_errored()
            return False
        self._open = True
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            log.error("NVML cannot count GPUs; NVML collector off", extra={"error": str(exc)})
            self.counters.add_errored()
            count = 0
        else:
            if count == 0:
                log.info(NO_GPU, extra={"reason": "the driver reports no devices"})
        self.gpus = [gpu for gpu in map(self._identify, range(count)) if gpu is not None]
        if not self.gpus:
            self.close()
            return False
        self._subscribe()
        log.info("NVML collector on", extra={"gpus": len(self.gpus), "node": self.node})
        return True

    def close(self) -> None:
        """Release the event set and NVML; safe to call twice."""
        if self._events is not None:
            self._quietly(self.nvml.nvmlEventSetFree, self._events)
            self._events = None
        if self._open:
            self._quietly(self.nvml.nvmlShutdown)
            self._open = False

    def _identify(self, index: int) -> Gpu | None:
        nvml = self.nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            bus_id = nvml.nvmlDeviceGetPciInfo(handle).busId
            labels = {
                "gpu": str(index),
                "UUID": _text(nvml.nvmlDeviceGetUUID(handle)),
                "pci_bus_id": _text(bus_id),
                "device": f"nvidia{nvml.nvmlDeviceGetMinorNumber(handle)}",
                "modelName": _text(nvml.nvmlDeviceGetName(handle)),
                "Hostname": self.node,
            }
        except nvml.NVMLError as exc:
            log.error("GPU cannot be identified; left out", extra={"gpu": index,
                                                                   "error": str(exc)})
            self.counters.add_errored()
            return None
        return Gpu(index, handle, labels, field_ids=list(self._fields))

    def _subscribe(self) -> None:
        nvml = self.nvml
        try:
            self._events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("no NVML event set; Xid events not watched", extra={"error": str(exc)})
            self.counters.add_errored()
            return
        for gpu in self.gpus:
            try:
                nvml.nvmlDeviceRegisterEvents(gpu.handle, nvml.nvmlEventTypeXidCriticalError,
                                              self._events)
            except nvml.NVMLError as exc:
                log.warning("Xid events not watched on this GPU", extra={
                    "gpu": gpu.index, "error": str(exc)})
                if exc.value not in self._unsupported:
                    self.counters.add_errored()

    # --- metrics -----------------------------------------------------------------------------

    def collect(self, now: float) -> None:
        samples: list[MetricSample] = []
        for gpu in self.gpus:
            try:
                samples += self._read(gpu, now)
            except _GpuLost:
                self.counters.add_errored()
                if not gpu.lost:
                    gpu.lost = True
                    log.error("GPU lost: NVML cannot reach it", extra=_who(gpu))
                continue
            if gpu.lost:
                gpu.lost = False
                log.info("GPU answers again", extra=_who(gpu))
        if not samples:
            return
        batch = MetricBatch(resource=self._resource,
                            samples=tag_samples(samples, self.node, self._resolver))
        self.bus.publish(Topic.METRICS, encode_metrics([batch]), key=self.node)
        self.counters.add_received(len(samples))
        self.counters.add_sent(len(samples))

    def _read(self, gpu: Gpu, now: float) -> list[MetricSample]:
        """One GPU's dcgm-exporter series; what it does not support is left out."""
        nvml, handle = self.nvml, gpu.handle
        out: list[MetricSample] = []

        def add(name: str, value: float, kind: MetricKind = "gauge") -> None:
            out.append(MetricSample(name, float(value), gpu.labels, now, kind))

        def ask(what: str, call: Callable[[], Any]) -> Any:
            return None if what in gpu.unsupported else self._ask(gpu, what, call)

        if (temp := ask("temperature", partial(nvml.nvmlDeviceGetTemperature, handle,
                                               nvml.NVML_TEMPERATURE_GPU))) is not None:
            add("DCGM_FI_DEV_GPU_TEMP", temp)
        for what, clock, metric in (("sm_clock", nvml.NVML_CLOCK_SM, "DCGM_FI_DEV_SM_CLOCK"),
                                    ("mem_clock", nvml.NVML_CLOCK_MEM, "DCGM_FI_DEV_MEM_CLOCK")):
            if (mhz := ask(what, partial(nvml.nvmlDeviceGetClockInfo, handle, clock))) is not None:
                add(metric, mhz)
        if (milliwatts := ask("power", partial(nvml.nvmlDeviceGetPowerUsage, handle))) is not None:
            add("DCGM_FI_DEV_POWER_USAGE", milliwatts / 1000)
        util = ask("utilization", partial(nvml.nvmlDeviceGetUtilizationRates, handle))
        if util is not None:
            add("DCGM_FI_DEV_GPU_UTIL", util.gpu)
            add("DCGM_FI_DEV_MEM_COPY_UTIL", util.memory)
        if (memory := ask("memory", partial(nvml.nvmlDeviceGetMemoryInfo, handle))) is not None:
            # NVML's v1 numbers, where "used" includes what the driver reserves for itself.
            add("DCGM_FI_DEV_FB_FREE", memory.free // _MIB)
            add("DCGM_FI_DEV_FB_USED", memory.used // _MIB)
        reasons = ask("clocks_event_reasons",
                      partial(nvml.nvmlDeviceGetCurrentClocksEventReasons, handle))
        if reasons is not None:
            add("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", reasons)
        for what, policy, metric in (
            ("power_violation", nvml.NVML_PERF_POLICY_POWER, "DCGM_FI_DEV_POWER_VIOLATION"),
            ("thermal_violation", nvml.NVML_PERF_POLICY_THERMAL,
             "DCGM_FI_DEV_THERMAL_VIOLATION"),
        ):
            violation = ask(what, partial(nvml.nvmlDeviceGetViolationStatus, handle, policy))
            if violation is not None:
                add(metric, violation.violationTime, "counter")  # nanoseconds held back
        for name, value, kind in self._read_fields(gpu):
            add(name, value, kind)
        add("DCGM_FI_DEV_XID_ERRORS", gpu.last_xid)
        return out

    def _read_fields(self, gpu: Gpu) -> list[tuple[str, float, MetricKind]]:
        """The counters NVML keeps as fields, all in one call (ECC, remapping, NVLink, PCIe)."""
        if not gpu.field_ids:
            return []
        values = self._ask(gpu, "fields", partial(self.nvml.nvmlDeviceGetFieldValues, gpu.handle,
                                                  gpu.field_ids))
        if values is None:
            return []
        read = []
        for value in values:
            metric, kind = self._fields[value.fieldId]
            if value.nvmlReturn == self.nvml.NVML_SUCCESS:
                read.append((metric, float(getattr(value.value, _VALUE_MEMBER[value.valueType])),
                             kind))
            elif value.nvmlReturn in self._unsupported:
                gpu.field_ids.remove(value.fieldId)
            else:
                self._trouble(gpu, metric, self.nvml.NVMLError(value.nvmlReturn))
        return read

    def _ask(self, gpu: Gpu, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self.nvml.NVMLError as exc:
            self._trouble(gpu, what, exc)
            return None

    def _trouble(self, gpu: Gpu, what: str, exc: Any) -> None:
        """Sort an NVML error: not supported (quiet), GPU lost (raise), or counted and logged."""
        if exc.value in self._unsupported:
            gpu.unsupported.add(what)
        elif exc.value == self.nvml.NVML_ERROR_GPU_IS_LOST:
            raise _GpuLost from exc
        else:
            self.counters.add_errored()
            if (gpu.index, what) not in self._complained:
                self._complained.add((gpu.index, what))
                log.warning("NVML query failed", extra={**_who(gpu), "query": what,
                                                        "error": str(exc)})

    # --- Xid events ----------------------------------------------------------------------------

    def _watch_xids(self) -> None:
        while not self.stopping.is_set():
            try:
                self.wait_for_xid(self.event_wait_ms)
            except Exception:  # an odd event must not end Xid watching
                log.exception("Xid event not handled", extra={"collector": self.name})
                self.counters.add_errored()

    def wait_for_xid(self, timeout_ms: int) -> bool:
        """Wait up to `timeout_ms` for one Xid event and publish it; True if one came."""
        nvml = self.nvml
        try:
            event = nvml.nvmlEventSetWait(self._events, timeout_ms)
        except nvml.NVMLError as exc:
            if exc.value != nvml.NVML_ERROR_TIMEOUT:
                if (-1, "event_wait") not in self._complained:
                    self._complained.add((-1, "event_wait"))
                    log.warning("waiting for NVML events failed", extra={"error": str(exc)})
                self.counters.add_errored()
                self.stopping.wait(timeout_ms / 1000)  # do not spin on a failing wait
            return False
        if not event.eventType & nvml.nvmlEventTypeXidCriticalError:
            return False
        gpu = self._gpu_of(event.device)
        if gpu is None:
            log.warning("Xid event from a GPU not known at start", extra={"xid": event.eventData})
            self.counters.add_errored()
            return False
        gpu.last_xid = int(event.eventData)
        body = (f"NVRM: Xid (PCI:{gpu.kernel_pci}): {gpu.last_xid}, pid='<unknown>', "
                f"name=<unknown>, reported by NVML for GPU {gpu.index} ({gpu.labels['UUID']})")
        line = LogLine(body=body, timestamp=time.time(), attributes={"log.source": "nvml"},
                       severity_text="ERROR")
        self.bus.publish(Topic.LOGS, encode_logs([LogBatch(self._resource, [line])]),
                         key=self.node)
        self.counters.add_received()
        self.counters.add_sent()
        return True

    def _gpu_of(self, handle: Any) -> Gpu | None:
        """The GPU an event names; handles are pointers, compared by address."""
        address = _address(handle)
        return next((gpu for gpu in self.gpus if _address(gpu.handle) == address), None)

    def _quietly(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except self.nvml.NVMLError as exc:
            log.warning("NVML cleanup failed", extra={"call": call.__name__, "error": str(exc)})


def _address(handle: Any) -> int | None:
    value = ctypes.cast(handle, ctypes.c_void_p).value
    return int(value) if value is not None else None


def _text(value: str | bytes) -> str:
    """NVML strings arrive as str or as bytes, depending on the call and the pynvml version."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _who(gpu: Gpu) -> dict[str, str]:
    return {"gpu": gpu.labels["gpu"], "UUID": gpu.labels["UUID"],
            "pci_bus_id": gpu.labels["pci_bus_id"]}
