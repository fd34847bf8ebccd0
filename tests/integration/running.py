"""A running `vigil up` as the integration tests drive it: its state and its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vigil.ui.runstate import RunState

VIGIL = str(Path(sys.executable).with_name("vigil"))


@dataclass
class RunningVigil:
    data_dir: Path
    env: dict[str, str]
    state: RunState
    process: subprocess.Popen[str]
    ready_s: float

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([VIGIL, *args], env=self.env, capture_output=True, text=True,
                                timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"vigil {' '.join(args)} failed: {result.stderr}")
        return result

    def cli_json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "--json").stdout)
