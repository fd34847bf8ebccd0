"""The fault-mode library: what can go wrong, how it shows, what it causes, how to recover."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vigil.records import Severity

# compute: the GPU/NPU itself; memory: its HBM; job: the framework and the training job;
# service: the cluster's own services (schedulers' daemons, storage servers, registries).
Layer = Literal[
    "compute", "memory", "interconnect", "network", "storage", "host", "scheduler", "job",
    "service",
]
Condition = Literal["above", "below", "increase", "absent", "peer_outlier"]

# The placeholders an example log line may use; whoever replays an example (the simulator,
# the tests) fills in every one of them.
EXAMPLE_FIELDS = frozenset({
    "pci", "pid", "node", "nic_pci", "ibdev", "port", "netdev", "storage", "job", "rank", "gpu",
    "iteration", "mount",
})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSignal(_Model):
    """A kernel or application log line that shows the fault."""

    contains: str = Field(description="literal that every match contains; a cheap pre-filter")
    pattern: str = Field(description="Python regex; named groups become alert evidence")

    @field_validator("contains")
    @classmethod
    def _one_line(cls, value: str) -> str:
        # Batches of lines are screened joined by newlines (LogMatcher.scan).
        if not value or "\n" in value:
            raise ValueError("must be a non-empty literal on one line")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regex: {exc}") from None
        return value

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


class MetricSignal(_Model):
    """A metric, as its exporter names it, whose behaviour shows the fault.

    above / below: the value stays beyond `threshold` for `for_s`.
    increase: a counter rises by more than `threshold` within `for_s`.
    absent: no finite sample (missing, NaN or Inf) for `for_s`.
    peer_outlier: the entity's value stands out from its peers' (the other GPUs of its node,
    the other ranks of its job) for `for_s`; `threshold`, if given, is the ratio to the peers'
    median that counts.
    """

    metric: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                        description="exporter name as written, e.g. DCGM_FI_DEV_GPU_TEMP")
    condition: Condition
    threshold: float | None = None
    for_s: float = Field(0, ge=0, description="how long the condition must hold, in seconds")
    description: str = ""

    @model_validator(mode="after")
    def _threshold_fits_condition(self) -> MetricSignal:
        if self.condition in ("above", "below", "increase") and self.threshold is None:
            raise ValueError(f"condition {self.condition!r} needs a threshold")
        if self.condition == "absent" and self.threshold is not None:
            raise ValueError("condition 'absent' takes no threshold")
        return self


class Signals(_Model):
    logs: list[LogSignal] = []
    metrics: list[MetricSignal] = []


class FaultMode(_Model):
    id: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    layer: Layer
    component: str
    title: str
    severity: Severity
    description: str
    signals: Signals = Signals()
    xid: int | None = None
    downstream: list[str] = []
    likely_causes: list[str] = []
    playbook: str
    example: str | None = Field(
        None, description="a log line showing the fault; placeholders from EXAMPLE_FIELDS, "
        "e.g. {pci}, {pid}, {node}, are filled in"
    )
    near_miss: list[str] = Field(
        [], description="lines that look like the fault but are not it (a healthy variant, a "
        "neighbouring code); none may raise this mode. Placeholders as in `example`")
    references: list[str] = []

    @field_validator("example")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        return None if value is None else _template(value)

    @field_validator("near_miss")
    @classmethod
    def _near_misses_are_templates(cls, value: list[str]) -> list[str]:
        return [_template(line) for line in value]

    @model_validator(mode="after")
    def _signals_and_example(self) -> FaultMode:
        if not self.signals.logs and not self.signals.metrics:
            raise ValueError("a fault mode needs at least one signal (a log line or a metric)")
        if self.signals.logs and self.example is None:
            raise ValueError("a fault mode with a log signal needs an example log line")
        return self


def _template(value: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid example template: {exc}") from None
    unknown = sorted(names - EXAMPLE_FIELDS)
    if unknown:
        raise ValueError(f"unknown placeholders {unknown}; use {sorted(EXAMPLE_FIELDS)}")
    return value


class _File(_Model):
    modes: list[FaultMode]


class LibraryError(Exception):
    """A fault-library file that cannot be used; the message names the file and key."""


class FaultLibrary:
    """All fault modes, by id."""

    def __init__(self, modes: Iterable[FaultMode]) -> None:
        self._modes: dict[str, FaultMode] = {}
        for mode in modes:
            if mode.id in self._modes:
                raise LibraryError(f"fault mode {mode.id!r} is defined twice")
            self._modes[mode.id] = mode
        for mode in self._modes.values():
            unknown = [d for d in mode.downstream if d not in self._modes]
            if unknown:
                raise LibraryError(f"{mode.id}: downstream names unknown modes {unknown}")

    def __iter__(self) -> Iterator[FaultMode]:
        return iter(self._modes.values())

    def __len__(self) -> int:
        return len(self._modes)

    def __contains__(self, fault_id: object) -> bool:
        return fault_id in self._modes

    def get(self, fault_id: str) -> FaultMode:
        try:
            return self._modes[fault_id]
        except KeyError:
            raise KeyError(f"unknown fault mode {fault_id!r}") from None

    @property
    def ids(self) -> list[str]:
        return sorted(self._modes)

    def by_xid(self, xid: int) -> FaultMode | None:
        return next((m for m in self._modes.values() if m.xid == xid), None)


# Values for the placeholders when an example or near miss is checked or replayed.
EXAMPLE_VALUES: dict[str, str] = {
    "pci": "0000:3b:00", "pid": "1234", "node": "n1", "nic_pci": "0000:0c:00.0",
    "ibdev": "mlx5_2", "port": "1", "netdev": "ib2", "storage": "nfs-01",
    "job": "llama3-70b-pretrain", "rank": "3", "gpu": "5", "iteration": "48210",
    "mount": "/mnt/nfs-01",
}


def load_library(folder: Path | None = None) -> FaultLibrary:
    """Load every `*.yaml` in `folder` (default: the library shipped with Vigil)."""
    if folder is None:
        root = resources.files("vigil.diagnosis") / "faults"
        files = sorted((p.name, p.read_text()) for p in root.iterdir() if p.name.endswith(".yaml"))
    else:
        files = sorted((p.name, p.read_text()) for p in folder.glob("*.yaml"))
    # FaultLibrary checks ids and downstream links too, but cannot say which file is at fault.
    origin: dict[str, str] = {}
    modes: list[FaultMode] = []
    for name, text in files:
        for mode in _parse(name, text):
            if mode.id in origin:
                raise LibraryError(
                    f"{name}: fault mode {mode.id!r} is already defined in {origin[mode.id]}"
                )
            origin[mode.id] = name
            modes.append(mode)
    for mode in modes:
        unknown = [d for d in mode.downstream if d not in origin]
        if unknown:
            raise LibraryError(
                f"{origin[mode.id]}: {mode.id}: downstream names unknown modes {unknown}"
            )
    return FaultLibrary(modes)


def _parse(name: str, text: str) -> list[FaultMode]:
    data: object = None
    try:
        data = yaml.safe_load(text)
        return _File.model_validate(data).modes
    except yaml.YAMLError as exc:
        raise LibraryError(f"{name}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{_where(data, e['loc'])}: {e['msg']}" for e in exc.errors())
        raise LibraryError(f"{name}: {problems}") from None


def _where(data: object, loc: tuple[int | str, ...]) -> str:
    """A validation error's place, naming the mode by its id: `modes[3] (gpu.xid.79).title`."""
    path = ".".join(str(p) for p in loc)
    if len(loc) >= 2 and loc[0] == "modes" and isinstance(loc[1], int) and isinstance(data, dict):
        modes = data.get("modes")
        if isinstance(modes, list) and loc[1] < len(modes) and isinstance(modes[loc[1]], dict):
            mode_id = modes[loc[1]].get("id")
            rest = ".".join(str(p) for p in loc[2:])
            path = f"mode {mode_id!r}" + (f" field {rest}" if rest else "")
    return path


def schema() -> dict[str, object]:
    """The JSON Schema of a library file (`diagnosis/faults/schema.json` is this, written out)."""
    return _File.model_json_schema()


