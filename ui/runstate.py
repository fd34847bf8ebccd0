"""The run-state file: what `vigil up` started and where, for `vigil status` and other commands."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RunState:
    pid: int
    bootstrap: str
    embedded_broker: bool
    db_url: str
    sim_url: str | None
    console_url: str | None
    metrics_url: str | None
    started_at: float
    ready_at: float | None = None
    child_pids: list[int] = field(default_factory=list)  # broker, console: gone after a stop
    components: list[str] = field(default_factory=list)

    def write(self, data_dir: Path) -> None:
        path = state_path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)  # readers never see half a file


def state_path(data_dir: Path) -> Path:
    return data_dir / "run.json"


def read_state(data_dir: Path) -> RunState | None:
    """The state of the `vigil up` that uses `data_dir`, or None when none is running there."""
    path = state_path(data_dir)
    try:
        data = json.loads(path.read_text())
        state = RunState(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None
    return state if _alive(state.pid) else None


def clear_state(data_dir: Path) -> None:
    state_path(data_dir).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
