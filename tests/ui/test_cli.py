"""The `vigil` command without running services: config checks, reading incidents, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vigil.ui.cli import app

from vigil.records import Incident, IncidentState, Severity
from vigil.store import Store

FIXTURES = Path(__file__).parents[1] / "vigil" / "fixtures"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("VIGIL_CONFIG", "VIGIL_DB_URL", "VIGIL_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path))
    return tmp_path


def test_config_check_accepts_a_good_file() -> None:
    result = runner.invoke(app, ["config", "check", str(FIXTURES / "good_settings.yaml")])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_config_check_names_every_bad_key() -> None:
    path = FIXTURES / "bad_settings.yaml"
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:5: sim.shelves: unknown key" in result.output.replace("\n", "")
    assert "kafka.partitions" in result.output


def test_up_with_a_bad_file_stops_before_starting_anything(_data_dir: Path) -> None:
    result = runner.invoke(app, ["up", "--config", str(FIXTURES / "bad_settings.yaml")])
    assert result.exit_code == 2
    assert "sim.nodes" in result.output
    assert not (_data_dir / "run.json").exists()


def test_incidents_json_is_flat_and_stable(_data_dir: Path) -> None:
    with Store.open(f"sqlite:///{_data_dir / 'vigil.db'}") as store:
        store.save_incident(Incident(
            id="inc-20261122-000000-abcdef", title="GPU has fallen off the bus (Xid 79)",
            severity=Severity.CRITICAL, state=IncidentState.OPEN, root_entity="gpu:n1/3",
            root_fault_id="gpu.xid.79", explanation="gpu:n1/3 reported ...",
            opened_at=1795305600.5, updated_at=1795305601.0, alert_fingerprints=("f1",),
            entities=("gpu:n1/3",), first_observed_at=1795305600.0,
        ))
    result = runner.invoke(app, ["incidents", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows == [{
        "id": "inc-20261122-000000-abcdef", "state": "open", "severity": "critical",
        "title": "GPU has fallen off the bus (Xid 79)", "root_entity": "gpu:n1/3",
        "root_fault_id": "gpu.xid.79", "explanation": "gpu:n1/3 reported ...",
        "entities": ["gpu:n1/3"], "alerts": 1,
        "first_observed_at": "2026-11-22T00:00:00.000Z",
        "opened_at": "2026-11-22T00:00:00.500Z", "updated_at": "2026-11-22T00:00:01.000Z",
        "detect_latency_s": 0.5,
    }]
    resolved = runner.invoke(app, ["incidents", "--json", "--state", "resolved"])
    assert json.loads(resolved.output) == []
    assert "inc-20261122-000000-abcdef" in runner.invoke(app, ["incidents"]).output


def test_incidents_without_a_store_creates_nothing(_data_dir: Path) -> None:
    result = runner.invoke(app, ["incidents", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == []
    assert not (_data_dir / "vigil.db").exists()


def test_commands_that_need_a_running_vigil_say_so() -> None:
    inject = runner.invoke(app, ["sim", "inject", "gpu.xid.79", "--target", "gpu:gpu-a-001/0"])
    assert inject.exit_code == 2
    assert "start `vigil up`" in inject.output
    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 1
    assert json.loads(status.output) == {"running": False}


def test_bench_sim_json_is_one_flat_object() -> None:
    result = runner.invoke(app, ["bench", "sim", "--nodes", "8", "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["nodes"] == 8 and figures["gpus"] == 64 and figures["steps"] == 2
    assert all(isinstance(v, (int, float)) for v in figures.values())
    assert figures["cpu_ms_per_node_per_step"] > 0


def test_sim_run_refuses_racks_that_do_not_divide_nodes() -> None:
    result = runner.invoke(app, ["sim", "run", "--nodes", "10", "--racks", "3"])
    assert result.exit_code == 2
    assert "multiple of --racks" in result.output


def test_sim_run_names_a_bad_scenario_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfaults:\n  - fault: gpu.xid.7\n    target: 'gpu:*'\n")
    result = runner.invoke(app, ["sim", "run", "--nodes", "4", "--port", "0", "--scenario",
                                 str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown fault 'gpu.xid.7'" in result.output
