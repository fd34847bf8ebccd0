"""LogMatcher: one pass finds every literal of a line, overlapping ones included."""

from __future__ import annotations

from vigil.diagnosis.library import FaultLibrary, FaultMode
from vigil.diagnosis.log_match import LogMatcher


def mode(mode_id: str, contains: str, pattern: str) -> FaultMode:
    return FaultMode.model_validate({
        "id": mode_id, "layer": "host", "component": "c", "title": "t", "severity": "warning",
        "description": "d", "playbook": "notify", "example": "x", "references": ["r"],
        "signals": {"logs": [{"contains": contains, "pattern": pattern}]}})


def test_overlapping_and_nested_literals_all_match() -> None:
    library = FaultLibrary([mode("t.outer", "soft lockup - CPU", r"soft lockup - CPU#\d+"),
                            mode("t.inner", "lockup", r"lockup"),
                            mode("t.other", "Xid", r"Xid \d+")])
    found = [m.id for m, _ in LogMatcher(library).matches("BUG: soft lockup - CPU#3 stuck")]
    assert found == ["t.outer", "t.inner"]
    assert list(LogMatcher(library).matches("all quiet")) == []


def test_a_literal_without_its_regex_raises_nothing() -> None:
    library = FaultLibrary([mode("t.xid", "Xid", r"Xid 79\b")])
    assert list(LogMatcher(library).matches("Xid 7 something")) == []
    assert [m.id for m, _ in LogMatcher(library).matches("Xid 79 lost")] == ["t.xid"]


def test_an_empty_library_matches_nothing() -> None:
    assert list(LogMatcher(FaultLibrary([])).matches("NVRM: Xid 79")) == []
