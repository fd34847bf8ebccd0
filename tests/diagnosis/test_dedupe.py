"""Dedupe: one alert per fault on an entity until it has been quiet for repeat_after_s."""

from __future__ import annotations

from vigil.diagnosis.dedupe import Dedupe

from vigil.records import Alert, Severity


def alert(fault: str, entity: str, at: float) -> Alert:
    return Alert(fault_id=fault, entity=entity, node=entity.partition(":")[2].split("/")[0],
                 severity=Severity.CRITICAL, summary="s", detector="d", observed_at=at,
                 detected_at=at + 1)


def test_repeats_are_dropped_until_repeat_after_s_has_passed() -> None:
    dedupe = Dedupe(repeat_after_s=600)
    xid = "gpu.xid.79"
    assert dedupe([alert(xid, "gpu:n1/3", 0), alert(xid, "gpu:n1/3", 1)]) == [
        alert(xid, "gpu:n1/3", 0)]
    assert dedupe([alert(xid, "gpu:n1/3", 599)]) == []
    assert dedupe([alert(xid, "gpu:n1/3", 600)]) == [alert(xid, "gpu:n1/3", 600)]


def test_another_entity_or_fault_is_another_alert() -> None:
    dedupe = Dedupe(repeat_after_s=600)
    batch = [alert("gpu.xid.79", "gpu:n1/3", 0), alert("gpu.xid.79", "gpu:n1/4", 0),
             alert("gpu.xid.48", "gpu:n1/3", 0)]
    assert dedupe(batch) == batch


def test_memory_is_bounded_and_the_least_recent_is_forgotten_first() -> None:
    dedupe = Dedupe(repeat_after_s=600, remembered=2)
    dedupe([alert("f", "node:a", 0), alert("f", "node:b", 0)])
    dedupe([alert("f", "node:a", 1)])  # a repeat, but it makes a the most recent
    dedupe([alert("f", "node:c", 2)])  # forgets b
    assert dedupe([alert("f", "node:b", 3)]) == [alert("f", "node:b", 3)]
    assert dedupe([alert("f", "node:c", 3)]) == []
