"""Ground truth of a simulated run: the faults injected and the stretches left healthy.

The simulator writes one JSON object per line; the benchmark reads them back and scores
Vigil's alerts and incidents against them (`vigil.sim.scoring`). Reading is a boundary, so
it checks every line and names the line and field of anything it cannot use.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The layers a fault can belong to, in the order reports list them.
LAYERS = ("compute", "memory", "interconnect", "network", "storage", "host", "scheduler", "job")


class TruthError(ValueError):
    """A truth file line that is not a valid fault or healthy-window record."""


@dataclass(frozen=True, slots=True)
class TruthFault:
    """One injected fault: what it was, where it started, whom it touched and when."""

    scenario: str  # scenario name, e.g. "xid79-gpu"
    fault_id: str  # library fault-mode id, e.g. "gpu.xid.79"
    layer: str  # one of LAYERS
    root_entity: str  # e.g. "gpu:gpu-a-003/5", "switch:leaf-1-2", "job:llm-7b-01"
    onset: float  # unix seconds (wall clock of the run)
    end: float  # when the fault stopped (onset + duration)
    affected: tuple[str, ...]  # every entity the fault touches, root included
    nodes: tuple[str, ...]  # host names whose telemetry shows the fault


@dataclass(frozen=True, slots=True)
class HealthyWindow:
    """A stretch of the run with no fault injected anywhere, over `nodes` hosts."""

    start: float
    end: float
    nodes: int


_KINDS: dict[str, type[TruthFault] | type[HealthyWindow]] = {
    "fault": TruthFault,
    "healthy": HealthyWindow,
}


def write_truth(
    path: Path, faults: Iterable[TruthFault], healthy: Iterable[HealthyWindow]
) -> None:
    """Write `faults` then `healthy` to `path` as JSON lines tagged with their "kind"."""
    lines = [_line("fault", fault) for fault in faults]
    lines += [_line("healthy", window) for window in healthy]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_truth(path: Path) -> tuple[list[TruthFault], list[HealthyWindow]]:
    """Read a file written by `write_truth`; raise TruthError naming the first bad line."""
    faults: list[TruthFault] = []
    healthy: list[HealthyWindow] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = _parse(text)
        except TruthError as exc:
            raise TruthError(f"{path}:{number}: {exc}") from exc
        if isinstance(record, TruthFault):
            faults.append(record)
        else:
            healthy.append(record)
    return faults, healthy


def _line(kind: str, record: TruthFault | HealthyWindow) -> str:
    return json.dumps({"kind": kind, **dataclasses.asdict(record)}, separators=(",", ":"))


def _parse(text: str) -> TruthFault | HealthyWindow:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TruthError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TruthError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.pop("kind", None)
    if kind not in _KINDS:
        raise TruthError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind]
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    missing = [name for name in names if name not in data]
    if unknown or missing:
        raise TruthError(
            f"{kind}: unknown field(s) {unknown or 'none'}, missing field(s) {missing or 'none'}"
        )
    values = {name: _coerce(kind, name, data[name]) for name in names}
    record = cls(**values)
    if record.end < (record.onset if isinstance(record, TruthFault) else record.start):
        raise TruthError(f"{kind}: end is before its start")
    return record


def _coerce(kind: str, name: str, value: Any) -> Any:
    """Check one field's JSON type, turning lists back into tuples."""
    if name in ("affected", "nodes") and kind == "fault":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TruthError(f"{kind}.{name}: expected a list of strings")
        return tuple(value)
    if name == "nodes":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TruthError(f"{kind}.{name}: expected a non-negative integer")
        return value
    if name in ("onset", "end", "start"):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TruthError(f"{kind}.{name}: expected a number")
        return float(value)
    if not isinstance(value, str):
        raise TruthError(f"{kind}.{name}: expected a string")
    return value
