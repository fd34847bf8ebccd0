"""Settings: defaults, the YAML file, VIGIL_* variables, and errors that name key, file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.settings import SettingsError, load_settings

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("VIGIL_"):
            monkeypatch.delenv(name)


def test_defaults_suit_the_embedded_broker() -> None:
    s = load_settings()
    assert s.kafka.bootstrap is None
    assert s.kafka.session_timeout_ms == 6000
    assert s.kafka.idempotence is False
    assert s.sim.nodes >= 4 and s.sim.gpus_per_node == 8
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("vigil.db")


def test_file_values_are_read() -> None:
    s = load_settings(FIXTURES / "good_settings.yaml")
    assert s.sim.nodes == 6 and s.sim.gpus_per_node == 4
    assert s.kafka.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert s.data_dir == Path("/tmp/vigil-fixture")


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_SIM_NODES", "9")
    monkeypatch.setenv("VIGIL_KAFKA_BOOTSTRAP", "broker:19092")
    monkeypatch.setenv("VIGIL_KAFKA_SESSION_TIMEOUT_MS", "7000")
    monkeypatch.setenv("VIGIL_DB_URL", "postgresql://vigil:secret@db/vigil")
    s = load_settings(FIXTURES / "good_settings.yaml")
    assert s.sim.nodes == 9
    assert s.sim.gpus_per_node == 4  # from the file
    assert s.kafka.bootstrap == "broker:19092"
    assert s.kafka.session_timeout_ms == 7000
    assert s.database_url == "postgresql://vigil:secret@db/vigil"


def test_config_file_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_CONFIG", str(FIXTURES / "good_settings.yaml"))
    assert load_settings().sim.nodes == 6


def test_every_problem_is_reported_with_key_file_and_line() -> None:
    path = FIXTURES / "bad_settings.yaml"
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    problems = caught.value.problems
    assert len(problems) == 4
    text = "\n".join(problems)
    assert f"{path}:2: kafka.partitions:" in text
    assert f"{path}:4: sim.nodes: Input should be greater than or equal to 1" in text
    assert f"{path}:5: sim.shelves: unknown key" in text
    assert f"{path}:8: colour: unknown key" in text


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_SIM_INTERVAL_S", "-1")
    with pytest.raises(SettingsError, match=r"sim\.interval_s: Input should be greater than 0"):
        load_settings()


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sim: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="top level must be a mapping"):
        load_settings(listing)
