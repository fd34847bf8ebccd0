"""LogMatcher: one pass finds every literal of a line, overlapping ones included."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from vigil.diagnosis.library import EXAMPLE_VALUES, FaultLibrary, FaultMode
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


def test_a_batch_scan_finds_what_line_by_line_matching_finds(library: FaultLibrary) -> None:
    matcher = LogMatcher(library)
    examples = [m.example.format(**EXAMPLE_VALUES) for m in library if m.example]
    # the library's examples between noise, a multi-line record and an empty line among them
    texts = [text for example in examples
             for text in (example, "step 10 loss 2.31", "Traceback:\n  File x", "")]
    scanned = [(i, m.id, match.group(0)) for i, m, match in matcher.scan(texts)]
    one_by_one = [(i, m.id, match.group(0)) for i, text in enumerate(texts)
                  for m, match in matcher.matches(text)]
    assert scanned == one_by_one
    assert len({i for i, _, _ in scanned}) == len(examples)


def test_a_literal_must_be_one_line() -> None:
    with pytest.raises(ValidationError, match="one line"):
        mode("t.bad", "Xid\n79", r"Xid")


def test_lines_of_one_shape_are_still_told_apart_by_their_digits() -> None:
    # "Xid 79" and "Xid 48" have the same shape (digits made 0); only one holds the literal
    matcher = LogMatcher(FaultLibrary([mode("t.79", "Xid 79", r"Xid 79\b")]))
    texts = ["NVRM: Xid 48 at 10", "NVRM: Xid 79 at 11", "NVRM: Xid 48 at 12", "Xid 79"]
    assert [(i, m.id) for i, m, _ in matcher.scan(texts)] == [(1, "t.79"), (3, "t.79")]
    assert [(i, m.id) for i, m, _ in matcher.scan(texts[::-1])] == [(0, "t.79"), (2, "t.79")]
