"""The README never lies: CI runs exactly its test command, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    run_command, test_command = blocks[0].strip(), blocks[1].strip()
    assert run_command.endswith("vigil up")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command


def test_readme_scripts_exist_and_are_executable() -> None:
    for script in ("deploy/setup.sh", ".ci/run"):
        path = ROOT / script
        assert path.is_file() and path.stat().st_mode & 0o111, script
