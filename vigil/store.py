"""SQL state store for incidents, alerts and actions (SQLAlchemy models, Alembic-migrated)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Text,
    create_engine,
    event,
    make_url,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from vigil.records import Action, ActionState, Alert, Incident, IncidentState, Severity

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 30_000

# Deterministic constraint names, so migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class IncidentRow(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    root_entity: Mapped[str] = mapped_column(String(255))
    root_fault_id: Mapped[str] = mapped_column(String(128))
    explanation: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[float] = mapped_column(Float, index=True)
    updated_at: Mapped[float] = mapped_column(Float)
    alert_fingerprints: Mapped[list[str]] = mapped_column(JSON)
    entities: Mapped[list[str]] = mapped_column(JSON)
    first_observed_at: Mapped[float] = mapped_column(Float)
    schema_version: Mapped[int] = mapped_column(Integer)


class AlertRow(Base):
    __tablename__ = "alerts"

    # Surrogate key: the alert table is a log, so one fingerprint may appear many times.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str | None] = mapped_column(String(64), index=True)
    fingerprint: Mapped[str] = mapped_column(String(16), index=True)
    fault_id: Mapped[str] = mapped_column(String(128))
    entity: Mapped[str] = mapped_column(String(255))
    node: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    detector: Mapped[str] = mapped_column(String(128))
    observed_at: Mapped[float] = mapped_column(Float)
    detected_at: Mapped[float] = mapped_column(Float)
    evidence: Mapped[dict[str, str]] = mapped_column(JSON)
    schema_version: Mapped[int] = mapped_column(Integer)


class ActionRow(Base):
    __tablename__ = "actions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(64), index=True)
    playbook: Mapped[str] = mapped_column(String(128))
    step: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[int] = mapped_column(Integer)


def _incident_row(incident: Incident) -> IncidentRow:
    return IncidentRow(
        id=incident.id,
        title=incident.title,
        severity=incident.severity.value,
        state=incident.state.value,
        root_entity=incident.root_entity,
        root_fault_id=incident.root_fault_id,
        explanation=incident.explanation,
        opened_at=incident.opened_at,
        updated_at=incident.updated_at,
        alert_fingerprints=list(incident.alert_fingerprints),
        entities=list(incident.entities),
        first_observed_at=incident.first_observed_at,
        schema_version=incident.schema,
    )


def _incident(row: IncidentRow) -> Incident:
    return Incident(
        id=row.id,
        title=row.title,
        severity=Severity(row.severity),
        state=IncidentState(row.state),
        root_entity=row.root_entity,
        root_fault_id=row.root_fault_id,
        explanation=row.explanation,
        opened_at=row.opened_at,
        updated_at=row.updated_at,
        alert_fingerprints=tuple(row.alert_fingerprints),
        entities=tuple(row.entities),
        first_observed_at=row.first_observed_at,
        schema=row.schema_version,
    )


def _alert_row(alert: Alert, incident_id: str | None) -> AlertRow:
    return AlertRow(
        incident_id=incident_id,
        fingerprint=alert.fingerprint,
        fault_id=alert.fault_id,
        entity=alert.entity,
        node=alert.node,
        severity=alert.severity.value,
        summary=alert.summary,
        detector=alert.detector,
        observed_at=alert.observed_at,
        detected_at=alert.detected_at,
        evidence=dict(alert.evidence),
        schema_version=alert.schema,
    )


def _alert(row: AlertRow) -> Alert:
    return Alert(
        fault_id=row.fault_id,
        entity=row.entity,
        node=row.node,
        severity=Severity(row.severity),
        summary=row.summary,
        detector=row.detector,
        observed_at=row.observed_at,
        detected_at=row.detected_at,
        evidence=dict(row.evidence),
        schema=row.schema_version,
    )


def _action_row(action: Action) -> ActionRow:
    return ActionRow(
        id=action.id,
        incident_id=action.incident_id,
        playbook=action.playbook,
        step=action.step,
        target=action.target,
        state=action.state.value,
        dry_run=action.dry_run,
        created_at=action.created_at,
        detail=action.detail,
        schema_version=action.schema,
    )


def _action(row: ActionRow) -> Action:
    return Action(
        id=row.id,
        incident_id=row.incident_id,
        playbook=row.playbook,
        step=row.step,
        target=row.target,
        state=ActionState(row.state),
        dry_run=row.dry_run,
        created_at=row.created_at,
        detail=row.detail,
        schema=row.schema_version,
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic config located by file path, so it works from any cwd and when installed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # Busy timeout first: switching to WAL itself needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # WAL lets CLI readers run while the writer stage holds the write lock.
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


class Store:
    """Incidents, alerts and actions in a SQL database; every method is its own transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to `url` and migrate its schema to the latest revision."""
        path = _sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        store = cls(engine)
        if store._sqlite:
            _configure_sqlite(engine)
        try:
            store._migrate()
        except BaseException:
            engine.dispose()
            raise
        return store

    def _migrate(self) -> None:
        with self._engine.begin() as connection:
            if self._sqlite:
                # pysqlite would run the DDL outside any transaction; holding the write lock
                # makes processes that start together migrate one after another.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            command.upgrade(alembic_config(connection), "head")

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            if self._sqlite:
                # pysqlite would run merge()'s SELECT outside any transaction; taking the write
                # lock first makes its read-then-write atomic against other processes.
                session.execute(text("BEGIN IMMEDIATE"))
            yield session

    def save_incident(self, incident: Incident) -> None:
        with self._write() as session:
            session.merge(_incident_row(incident))

    def add_alert(self, alert: Alert, incident_id: str | None) -> None:
        with self._write() as session:
            session.add(_alert_row(alert, incident_id))

    def save_action(self, action: Action) -> None:
        with self._write() as session:
            session.merge(_action_row(action))

    def incidents(self, state: IncidentState | None = None, limit: int = 100) -> list[Incident]:
        """Newest opened first."""
        query = select(IncidentRow).order_by(IncidentRow.opened_at.desc(), IncidentRow.id.desc())
        if state is not None:
            query = query.where(IncidentRow.state == state.value)
        with self._sessions() as session:
            return [_incident(row) for row in session.scalars(query.limit(limit))]

    def incident(self, incident_id: str) -> Incident | None:
        with self._sessions() as session:
            row = session.get(IncidentRow, incident_id)
            return None if row is None else _incident(row)

    def alerts(self, incident_id: str | None = None, limit: int = 1000) -> list[Alert]:
        """Newest detected first; insertion order breaks ties."""
        query = select(AlertRow).order_by(AlertRow.detected_at.desc(), AlertRow.id.desc())
        if incident_id is not None:
            query = query.where(AlertRow.incident_id == incident_id)
        with self._sessions() as session:
            return [_alert(row) for row in session.scalars(query.limit(limit))]

    def actions(self, incident_id: str | None = None) -> list[Action]:
        """In the order they were created, as playbook steps run."""
        query = select(ActionRow).order_by(ActionRow.created_at, ActionRow.id)
        if incident_id is not None:
            query = query.where(ActionRow.incident_id == incident_id)
        with self._sessions() as session:
            return [_action(row) for row in session.scalars(query)]
