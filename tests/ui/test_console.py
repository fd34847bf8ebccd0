"""The Streamlit console renders the incidents of the store it is pointed at."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vigil.records import Incident, IncidentState, Severity
from vigil.store import Store

APP = str(Path(__file__).parents[2] / "ui" / "console.py")


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'vigil.db'}"
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    monkeypatch.setenv("VIGIL_DB_URL", url)
    return url


def test_empty_store_says_healthy(db_url: str) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "Vigil"
    assert at.metric[0].value == "0"
    assert "healthy" in at.success[0].value


def test_open_incidents_are_counted_and_explained(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.save_incident(Incident(
            id="inc-1", title="GPU has fallen off the bus (Xid 79) on gpu:n1/3",
            severity=Severity.CRITICAL, state=IncidentState.OPEN, root_entity="gpu:n1/3",
            root_fault_id="gpu.xid.79", explanation="gpu:n1/3 reported Xid 79.",
            opened_at=10.0, updated_at=10.0,
        ))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert [m.value for m in at.metric[:2]] == ["1", "1"]
    assert "Xid 79" in at.expander[0].label
    assert "gpu:n1/3 reported Xid 79." in [m.value for m in at.markdown]
