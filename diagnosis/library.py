"""The fault-mode library: what can go wrong, how it shows, what it causes, how to recover."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vigil.records import Severity

Layer = Literal[
    "compute", "memory", "interconnect", "network", "storage", "host", "scheduler", "job"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSignal(_Model):
    """A kernel or application log line that shows the fault."""

    contains: str = Field(description="literal that every match contains; a cheap pre-filter")
    pattern: str = Field(description="Python regex; named groups become alert evidence")

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


class Signals(_Model):
    logs: list[LogSignal] = []


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
        None, description="a log line showing the fault; {pci}, {pid}, {node} are filled in"
    )
    references: list[str] = []


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
    try:
        data = yaml.safe_load(text)
        return _File.model_validate(data).modes
    except yaml.YAMLError as exc:
        raise LibraryError(f"{name}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise LibraryError(f"{name}: {problems}") from None
