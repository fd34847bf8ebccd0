"""`vigil faults …`: list, show, check and schema, through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner
from vigil.ui.cli import app

runner = CliRunner()
LIBRARIES = Path(__file__).parents[1] / "diagnosis" / "data" / "libraries"


def test_list_filters_by_layer() -> None:
    result = runner.invoke(app, ["faults", "list", "--layer", "storage", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and {row["layer"] for row in rows} == {"storage"}
    bad = runner.invoke(app, ["faults", "list", "--layer", "gpu"])
    assert bad.exit_code == 2 and "not a layer" in bad.output


def test_show_one_mode_and_refuse_unknown_ones() -> None:
    result = runner.invoke(app, ["faults", "show", "gpu.xid.79", "--json"])
    assert result.exit_code == 0, result.output
    mode = json.loads(result.output)
    assert mode["id"] == "gpu.xid.79" and mode["signals"]["logs"]
    text = runner.invoke(app, ["faults", "show", "gpu.xid.79"])
    assert "fallen off the bus" in text.output
    missing = runner.invoke(app, ["faults", "show", "gpu.xid.99999"])
    assert missing.exit_code == 2 and "did you mean" in missing.output


def test_check_the_shipped_library_and_a_broken_one() -> None:
    good = runner.invoke(app, ["faults", "check", "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["valid"] is True
    bad = runner.invoke(app, ["faults", "check", str(LIBRARIES / "bad_regex"), "--json"])
    assert bad.exit_code == 1
    [problem] = json.loads(bad.output)["problems"]
    assert "bad_regex.yaml" in problem and "test.alpha" in problem and "pattern" in problem


def test_check_finds_a_near_miss_that_raises_its_mode(tmp_path: Path) -> None:
    (tmp_path / "modes.yaml").write_text("""
modes:
  - id: test.disk_full
    layer: storage
    component: disk
    title: Disk full
    severity: warning
    description: A filesystem ran out of space.
    signals:
      logs:
        - contains: "No space left"
          pattern: 'No space left on device'
    playbook: notify
    example: "write failed: No space left on device"
    near_miss: ["No space left on device (recovered)"]
    references: [test]
""")
    result = runner.invoke(app, ["faults", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "test.disk_full: near miss" in result.output


def test_schema_is_json() -> None:
    result = runner.invoke(app, ["faults", "schema"])
    assert result.exit_code == 0
    assert "FaultMode" in json.loads(result.output)["$defs"]
