"""Tests for the SQL state store: round-trips, queries, migrations and shared SQLite files."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, create_engine

import vigil
from vigil.records import Action, ActionState, Alert, Incident, IncidentState, Severity
from vigil.store import BUSY_TIMEOUT_MS, MIGRATIONS_DIR, Base, Store

_PACKAGE_ROOT = Path(vigil.__file__).parent.parent


def _incident(incident_id: str = "inc-1", opened_at: float = 1000.0, **changes: Any) -> Incident:
    incident = Incident(
        id=incident_id,
        title="XID 79 on gpu-a-017/3",
        severity=Severity.CRITICAL,
        state=IncidentState.OPEN,
        root_entity="gpu:gpu-a-017/3",
        root_fault_id="gpu.xid.79",
        explanation="GPU fell off the bus; NCCL timeouts follow from it.",
        opened_at=opened_at,
        updated_at=opened_at + 5.25,
        alert_fingerprints=("aaaa", "bbbb"),
        entities=("gpu:gpu-a-017/3", "node:gpu-a-017"),
        first_observed_at=opened_at - 30.5,
    )
    return dataclasses.replace(incident, **changes)


def _alert(entity: str = "gpu:gpu-a-017/3", detected_at: float = 1000.0) -> Alert:
    return Alert(
        fault_id="gpu.xid.79",
        entity=entity,
        node="gpu-a-017",
        severity=Severity.WARNING,
        summary="XID 79 reported",
        detector="dcgm.xid",
        observed_at=detected_at - 1.5,
        detected_at=detected_at,
        evidence={"xid": "79", "message": "GPU has fallen off the bus"},
    )


def _action(
    action_id: str = "act-1", incident_id: str = "inc-1", created_at: float = 1000.0
) -> Action:
    return Action(
        id=action_id,
        incident_id=incident_id,
        playbook="gpu-reset",
        step="drain",
        target="node:gpu-a-017",
        state=ActionState.PROPOSED,
        dry_run=True,
        created_at=created_at,
        detail="cordon and drain before reset",
    )


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'vigil.db'}"


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store.open(url) as opened:
        yield opened


def test_incident_round_trip(store: Store) -> None:
    incident = _incident()
    store.save_incident(incident)
    loaded = store.incident("inc-1")
    assert loaded == incident
    assert loaded is not None
    assert type(loaded.severity) is Severity
    assert type(loaded.state) is IncidentState
    assert type(loaded.alert_fingerprints) is tuple
    assert type(loaded.entities) is tuple
    assert store.incident("missing") is None


def test_alert_round_trip_keeps_every_copy(store: Store, url: str) -> None:
    alert = _alert()
    store.add_alert(alert, "inc-1")
    store.add_alert(alert, "inc-1")  # a log: the same fingerprint may repeat
    store.add_alert(_alert(entity="gpu:gpu-a-017/4"), None)

    assert store.alerts("inc-1") == [alert, alert]
    assert len(store.alerts()) == 3
    assert type(store.alerts("inc-1")[0].severity) is Severity

    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        fingerprints = raw.execute("SELECT fingerprint FROM alerts WHERE incident_id = 'inc-1'")
        assert [row[0] for row in fingerprints] == [alert.fingerprint] * 2


def test_action_round_trip_update_and_filter(store: Store) -> None:
    first = _action("act-1", created_at=1000.0)
    second = _action("act-2", created_at=1001.0)
    other = _action("act-3", incident_id="inc-2", created_at=999.0)
    for action in (second, first, other):
        store.save_action(action)

    done = dataclasses.replace(first, state=ActionState.SUCCEEDED, dry_run=False, detail="ok")
    store.save_action(done)

    assert store.actions("inc-1") == [done, second]
    assert store.actions() == [other, done, second]
    assert type(store.actions("inc-2")[0].state) is ActionState


def test_incidents_newest_first_filtered_and_limited(store: Store) -> None:
    old = _incident("old", opened_at=100.0)
    new = _incident("new", opened_at=300.0)
    resolved = _incident("resolved", opened_at=200.0, state=IncidentState.RESOLVED)
    for incident in (old, new, resolved):
        store.save_incident(incident)

    assert store.incidents() == [new, resolved, old]
    assert store.incidents(IncidentState.OPEN) == [new, old]
    assert store.incidents(IncidentState.RESOLVED) == [resolved]
    assert store.incidents(limit=2) == [new, resolved]


def test_alerts_newest_first_and_limited(store: Store) -> None:
    alerts = [_alert(entity=f"gpu:gpu-a-017/{i}", detected_at=1000.0 + i) for i in range(5)]
    for alert in (alerts[2], alerts[0], alerts[4], alerts[1], alerts[3]):
        store.add_alert(alert, "inc-1")

    assert store.alerts() == alerts[::-1]
    assert store.alerts(limit=2) == [alerts[4], alerts[3]]
    assert store.alerts("other") == []


def test_save_incident_updates_in_place(store: Store) -> None:
    store.save_incident(_incident())
    resolved = _incident(
        state=IncidentState.RESOLVED,
        updated_at=2000.0,
        alert_fingerprints=("aaaa", "bbbb", "cccc"),
        explanation="reset fixed it",
    )
    store.save_incident(resolved)

    assert store.incidents() == [resolved]
    assert store.incident("inc-1") == resolved


def test_open_creates_folder_and_enables_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "vigil.db"
    with Store.open(f"sqlite:///{path}") as store:
        store.save_incident(_incident())
        assert path.exists()
        with store._engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS


def test_reopen_migrates_idempotently(url: str) -> None:
    with Store.open(url) as store:
        store.save_incident(_incident())
    with Store.open(url) as store:
        assert store.incident("inc-1") == _incident()

    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]


def test_two_stores_on_one_file_see_each_other(url: str) -> None:
    with Store.open(url) as writer, Store.open(url) as reader:
        writer.save_incident(_incident())
        writer.add_alert(_alert(), "inc-1")
        assert reader.incident("inc-1") == _incident()
        assert reader.alerts("inc-1") == [_alert()]

        reader.save_action(_action())
        assert writer.actions("inc-1") == [_action()]


# Child processes, not threads: the stage and the CLI are separate processes, and Alembic keeps
# per-run state in module globals that threads would share.
_WRITER = """
import sys
from vigil.records import Alert, Incident, IncidentState, Severity
from vigil.store import Store

url, name = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
with Store.open(url) as store:
    for i in range(5):
        incident_id = f"{name}-{i}"
        store.save_incident(Incident(incident_id, "t", Severity.INFO, IncidentState.OPEN,
                                     "e", "f", "x", float(i), float(i)))
        store.add_alert(Alert("f", "e", "n", Severity.INFO, "s", "d", 1.0, 2.0), incident_id)
"""


def test_processes_open_and_write_one_fresh_file(url: str) -> None:
    paths = [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, f"p{n}"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for child in children:
        assert child.stdout is not None
        child.stdout.readline()
    # Released together once all have imported, so they race to migrate the fresh file.
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    errors = [child.communicate(timeout=60)[1] for child in children]

    assert [child.returncode for child in children] == [0] * 4, errors
    with Store.open(url) as store:
        assert len(store.incidents(limit=1000)) == 20
        assert len(store.alerts()) == 20


def _migration_diffs(url: str, metadata: MetaData) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_models_match_migrations(store: Store, url: str) -> None:
    assert _migration_diffs(url, Base.metadata) == []


def test_model_migration_check_detects_drift(store: Store, url: str) -> None:
    # Guards the test above: a model column the migrations lack must show up as a diff.
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["incidents"].append_column(Column("owner", String(64)))

    diffs = _migration_diffs(url, drifted)
    assert any(diff[0] == "add_column" for diff in diffs if isinstance(diff, tuple))


def test_developer_ini_migrates_its_url(tmp_path: Path) -> None:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    db = tmp_path / "dev.db"
    config.set_main_option("sqlalchemy.url", f"sqlite:///{db}")
    command.upgrade(config, "head")

    with sqlite3.connect(db) as raw:
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert {"incidents", "alerts", "actions", "alembic_version"} <= tables
