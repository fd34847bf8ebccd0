"""Record what NVML answers on this machine, for the NVML collector's replayed test fixture.

Runs the real `NvmlCollector` for one interval (and waits for Xid events for `--wait-s`)
through a proxy around pynvml that writes down every answer, per GPU, in the shape that
tests/collectors/test_nvml.py replays:

    {"about": {...},
     "devices": [{"<pynvml function>": <answer>                  (called with the handle only)
                  "<pynvml function>": {"<arg>,<arg>": <answer>}  (called with more arguments)
                  "nvmlDeviceGetFieldValues": {"<field id>": <value>}}, ...],
     "events": [{"gpu": <index>, "eventType": <mask>, "eventData": <xid>}]}

An answer that was an NVML error is written {"error": "NVML_ERROR_..."}; structures become
objects of their fields. Usage, on a machine with NVIDIA GPUs:

    python bench/nvml_record.py --out tests/collectors/data/nvml/recorded.json --wait-s 30
"""

from __future__ import annotations

import argparse
import ctypes
import json
import socket
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml  # type: ignore[import-untyped]
from vigil.collectors.nvml import NvmlCollector

# Calls about the library or the event set, not about one GPU: passed through unrecorded.
_LIBRARY_CALLS = {"nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
                  "nvmlEventSetCreate", "nvmlEventSetFree", "nvmlEventSetWait"}


class RecordingNvml:
    """pynvml, with every per-GPU answer and every Xid event written down as it passes."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.devices: list[dict[str, Any]] = []
        self.events: list[dict[str, int]] = []
        self._index: dict[int | None, int] = {}  # handle address -> GPU index

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if not name.startswith("nvml") or not callable(attr):
            return attr  # constants, NVMLError
        return partial(self._call, name, attr)

    def _call(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            result = function(*args)
        except self.real.NVMLError as exc:
            if name.startswith("nvmlDevice") and name not in _LIBRARY_CALLS:
                self._note(name, args, {"error": self._error_name(exc.value)})
            raise
        if name == "nvmlDeviceGetCount":
            self.devices = [{} for _ in range(result)]
        elif name == "nvmlDeviceGetHandleByIndex":
            self._index[_address(result)] = args[0]
        elif name == "nvmlEventSetWait":
            self.events.append({"gpu": self._index[_address(result.device)],
                                "eventType": int(result.eventType),
                                "eventData": int(result.eventData)})
        elif name == "nvmlDeviceGetFieldValues":
            self._note(name, args, {str(v.fieldId): self._field(v) for v in result})
        elif name not in _LIBRARY_CALLS:
            self._note(name, args, _plain(result))
        return result

    def _note(self, name: str, args: tuple[Any, ...], answer: Any) -> None:
        device = self.devices[self._index[_address(args[0])]]
        if name == "nvmlDeviceGetFieldValues" or len(args) == 1:
            device[name] = answer
        else:
            device.setdefault(name, {})[argument_key(args[1:])] = answer

    def _field(self, value: Any) -> Any:
        if value.nvmlReturn != self.real.NVML_SUCCESS:
            return {"error": self._error_name(value.nvmlReturn)}
        member = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")[value.valueType]
        return getattr(value.value, member)

    def _error_name(self, code: int) -> str:
        return next((n for n in dir(pynvml)
                     if n.startswith("NVML_ERROR_") and getattr(pynvml, n) == code), str(code))


def argument_key(args: tuple[Any, ...]) -> str:
    """The recording's key for a call's arguments after the handle: its numbers and strings."""
    return ",".join(str(a) for a in args if isinstance(a, int | str))


def _address(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value


def _plain(value: Any) -> Any:
    """A ctypes answer as JSON: structures become objects of their fields, bytes text."""
    if isinstance(value, ctypes.Structure | ctypes.Union):
        return {name: _plain(getattr(value, name)) for name, *_ in value._fields_}
    if isinstance(value, SimpleNamespace):  # what the tests' replay answers with
        return {name: _plain(v) for name, v in vars(value).items()}
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


class _Discard:
    def publish(self, topic: str, value: bytes, key: str | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--wait-s", type=float, default=0.0,
                        help="seconds to wait for Xid events after the interval")
    args = parser.parse_args()
    proxy = RecordingNvml(pynvml)
    collector = NvmlCollector(_Discard(), socket.gethostname(), interval_s=10, nvml=proxy)
    if not collector.open():
        print("NVML did not start or found no GPU; nothing recorded", file=sys.stderr)
        return 1
    try:
        collector.collect(time.time())
        deadline = time.monotonic() + args.wait_s
        while time.monotonic() < deadline:
            collector.wait_for_xid(500)
        about = {"driver": str(pynvml.nvmlSystemGetDriverVersion()),
                 "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "shape": "written by bench/nvml_record.py"}
    finally:
        collector.close()
    recording = {"about": about, "devices": proxy.devices, "events": proxy.events}
    args.out.write_text(json.dumps(recording, indent=1) + "\n")
    print(f"{len(proxy.devices)} GPUs, {len(proxy.events)} events -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
