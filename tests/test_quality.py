"""ruff and mypy --strict pass over the whole project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# Top-level folders mapped into the vigil namespace (pyproject's package-dir).
MAPPED = {"collectors": "collectors", "topology": "topology", "diagnosis": "diagnosis",
          "ui": "ui", "sim": "sim"}


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.skip(f"{name} is not installed (deploy/setup.sh --dev installs it)")
    return str(path)


def test_ruff() -> None:
    result = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    # mypy cannot follow setuptools' package-dir mapping, so give it the installed shape:
    # a vigil/ folder whose subpackages are links to the top-level folders.
    tree = tmp_path / "vigil"
    shutil.copytree(ROOT / "vigil", tree, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for package, folder in MAPPED.items():
        os.symlink(ROOT / folder, tree / package)
    result = subprocess.run(
        [_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
         str(tmp_path / ".mypy_cache"), "-p", "vigil"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
