"""Tests for correlation: grouping alerts into incidents and choosing the probable root cause."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from vigil.diagnosis.correlate import Correlator
from vigil.diagnosis.library import FaultLibrary

from vigil.records import Alert, IncidentState, Severity

T0 = 1_718_000_000.0  # 2024-06-10T06:13:20Z
WINDOW = 60.0

MakeAlert = Callable[[str, str, float], Alert]  # (fault id, entity, observed at)


@pytest.fixture
def correlator(library: FaultLibrary) -> Correlator:
    return Correlator(library, window_s=WINDOW)


@pytest.fixture
def alert(library: FaultLibrary) -> MakeAlert:
    """Builds an alert for a library fault, with the library's severity."""

    def make(fault_id: str, entity: str, observed_at: float) -> Alert:
        node = entity.split(":", 1)[1].split("/", 1)[0]
        severity = library.get(fault_id).severity if fault_id in library else Severity.WARNING
        return Alert(fault_id=fault_id, entity=entity, node=node, severity=severity,
                     summary=f"{fault_id} on {node}", detector="test",
                     observed_at=observed_at, detected_at=observed_at + 1)

    return make


def test_first_alert_opens_an_incident_rooted_at_it(
    correlator: Correlator, alert: MakeAlert
) -> None:
    xid_79 = alert("gpu.xid.79", "gpu:n1/5", T0)

    result = correlator.add(xid_79, T0 + 1)

    assert result is not None and result.is_new
    incident = result.incident
    assert incident.id.startswith("inc-20240610-061321-")
    assert incident.id.endswith(xid_79.fingerprint[:6])
    assert incident.state == IncidentState.OPEN
    assert (incident.root_entity, incident.root_fault_id) == ("gpu:n1/5", "gpu.xid.79")
    assert incident.title == "GPU has fallen off the bus (Xid 79) on gpu:n1/5"
    assert incident.severity == Severity.CRITICAL
    assert (incident.opened_at, incident.updated_at, incident.first_observed_at) == (
        T0 + 1, T0 + 1, T0,
    )
    assert incident.alert_fingerprints == (xid_79.fingerprint,)
    assert incident.entities == ("gpu:n1/5",)
    assert incident.explanation == (
        "gpu:n1/5 reported GPU has fallen off the bus (Xid 79) at 06:13:20Z; likely causes: "
        "PCIe link or riser, power, overheating, GPU hardware."
    )


def test_alerts_on_one_node_within_the_window_join_one_incident(
    correlator: Correlator, alert: MakeAlert,
) -> None:
    first = correlator.add(alert("gpu.xid.13", "gpu:n1/0", T0), T0)
    second = correlator.add(alert("host.oom_kill", "node:n1", T0 + 30), T0 + 30)

    assert first is not None and second is not None
    assert not second.is_new
    assert second.incident.id == first.incident.id
    assert second.incident.opened_at == T0
    assert second.incident.updated_at == T0 + 30
    assert len(second.incident.alert_fingerprints) == 2
    assert second.incident.entities == ("gpu:n1/0", "node:n1")


def test_the_window_runs_from_the_last_alert_not_the_first(
    correlator: Correlator, alert: MakeAlert,
) -> None:
    ids = set()
    for i, (fault, entity) in enumerate(
        [("gpu.xid.13", "gpu:n1/0"), ("gpu.xid.31", "gpu:n1/1"), ("gpu.xid.43", "gpu:n1/2")]
    ):
        at = T0 + i * 50  # 100 s from first to last, 50 s between neighbours
        result = correlator.add(alert(fault, entity, at), at)
        assert result is not None
        ids.add(result.incident.id)

    assert len(ids) == 1


@pytest.mark.parametrize(("gap", "joins"), [(WINDOW, True), (WINDOW + 0.001, False)])
def test_an_alert_past_the_window_opens_a_new_incident(
    correlator: Correlator, alert: MakeAlert, gap: float, joins: bool,
) -> None:
    first = correlator.add(alert("gpu.xid.13", "gpu:n1/0", T0), T0)
    later = correlator.add(alert("gpu.xid.31", "gpu:n1/1", T0 + gap), T0 + gap)

    assert first is not None and later is not None
    assert later.is_new is not joins
    assert (later.incident.id == first.incident.id) is joins
    if not joins:
        assert later.incident.alert_fingerprints == (
            alert("gpu.xid.31", "gpu:n1/1", T0).fingerprint,
        )
        assert later.incident.root_fault_id == "gpu.xid.31"


def test_a_repeat_within_the_window_is_dropped(correlator: Correlator, alert: MakeAlert) -> None:
    first = correlator.add(alert("gpu.xid.79", "gpu:n1/5", T0), T0)

    repeat = correlator.add(alert("gpu.xid.79", "gpu:n1/5", T0 + 20), T0 + 20)

    assert first is not None
    assert repeat is None
    # ...and a repeat does not hold the incident open: the window still counts from T0.
    after = correlator.add(alert("gpu.xid.79", "gpu:n1/5", T0 + 70), T0 + 70)
    assert after is not None and after.is_new
    assert after.incident.id != first.incident.id


def test_the_same_fault_on_another_gpu_is_not_a_repeat(
    correlator: Correlator, alert: MakeAlert
) -> None:
    correlator.add(alert("gpu.xid.79", "gpu:n1/5", T0), T0)

    other = correlator.add(alert("gpu.xid.79", "gpu:n1/6", T0 + 1), T0 + 1)

    assert other is not None and not other.is_new
    assert other.incident.entities == ("gpu:n1/5", "gpu:n1/6")


def test_alerts_on_different_nodes_are_different_incidents(
    correlator: Correlator, alert: MakeAlert,
) -> None:
    on_n1 = correlator.add(alert("gpu.xid.79", "gpu:n1/5", T0), T0)
    on_n2 = correlator.add(alert("gpu.xid.79", "gpu:n2/5", T0 + 1), T0 + 1)

    assert on_n1 is not None and on_n2 is not None
    assert on_n1.is_new and on_n2.is_new
    assert on_n1.incident.id != on_n2.incident.id
    assert on_n2.incident.entities == ("gpu:n2/5",)


@pytest.mark.parametrize(
    ("cause", "effect", "effect_entity"),
    [
        # The effect is more severe and arrives first; the library's downstream still wins.
        ("gpu.xid.92", "gpu.xid.48", "gpu:n1/2"),
        # Equally severe; the effect is observed earlier; downstream still wins.
        ("gpu.xid.79", "job.nccl.timeout", "node:n1"),
    ],
)
def test_root_cause_is_the_upstream_mode_the_library_names(
    library: FaultLibrary, correlator: Correlator, alert: MakeAlert,
    cause: str, effect: str, effect_entity: str,
) -> None:
    assert effect in library.get(cause).downstream  # the premise, from diagnosis/faults/*.yaml

    correlator.add(alert(effect, effect_entity, T0), T0)
    result = correlator.add(alert(cause, "gpu:n1/2", T0 + 10), T0 + 10)

    assert result is not None
    incident = result.incident
    assert (incident.root_fault_id, incident.root_entity) == (cause, "gpu:n1/2")
    assert incident.title == f"{library.get(cause).title} on gpu:n1/2"
    assert incident.severity == max(
        library.get(cause).severity, library.get(effect).severity, key=lambda s: s.rank
    )
    assert incident.first_observed_at == T0


def test_a_known_cause_outranks_an_unrelated_more_severe_alert(
    library: FaultLibrary, correlator: Correlator, alert: MakeAlert,
) -> None:
    assert library.get("host.soft_lockup").severity == Severity.CRITICAL
    assert library.get("gpu.xid.92").severity == Severity.WARNING

    correlator.add(alert("host.soft_lockup", "node:n1", T0), T0)
    correlator.add(alert("gpu.xid.48", "gpu:n1/2", T0 + 1), T0 + 1)
    result = correlator.add(alert("gpu.xid.92", "gpu:n1/2", T0 + 2), T0 + 2)

    assert result is not None
    assert (result.incident.root_fault_id, result.incident.root_entity) == (
        "gpu.xid.92", "gpu:n1/2",
    )
    assert result.incident.severity == Severity.CRITICAL


def test_root_cause_follows_a_chain_of_downstream_modes(
    correlator: Correlator, alert: MakeAlert,
) -> None:
    # gpu.xid.92 -> gpu.xid.48 -> gpu.xid.63/64: the head of the chain is the root.
    for i, fault in enumerate(["gpu.xid.64", "gpu.xid.48", "gpu.xid.92", "gpu.xid.63"]):
        result = correlator.add(alert(fault, "gpu:n1/2", T0 + i), T0 + i)

    assert result is not None
    assert result.incident.root_fault_id == "gpu.xid.92"


def test_root_cause_without_a_downstream_link_is_the_most_severe(
    library: FaultLibrary, correlator: Correlator, alert: MakeAlert,
) -> None:
    assert "host.soft_lockup" not in library.get("gpu.xid.13").downstream
    assert "gpu.xid.13" not in library.get("host.soft_lockup").downstream

    correlator.add(alert("gpu.xid.13", "gpu:n1/0", T0), T0)
    result = correlator.add(alert("host.soft_lockup", "node:n1", T0 + 10), T0 + 10)

    assert result is not None
    assert (result.incident.root_fault_id, result.incident.root_entity) == (
        "host.soft_lockup", "node:n1",
    )
    assert result.incident.severity == Severity.CRITICAL


def test_root_cause_among_equals_is_the_earliest_observed(
    correlator: Correlator, alert: MakeAlert,
) -> None:
    # Both warnings, unrelated; the second to arrive was observed first.
    correlator.add(alert("gpu.xid.13", "gpu:n1/0", T0 + 5), T0 + 5)
    result = correlator.add(alert("host.hung_task", "node:n1", T0), T0 + 6)

    assert result is not None
    assert (result.incident.root_fault_id, result.incident.root_entity) == (
        "host.hung_task", "node:n1",
    )
    assert result.incident.first_observed_at == T0


def test_explanation_names_the_root_entity_and_the_related_alerts(
    correlator: Correlator, alert: MakeAlert,
) -> None:
    correlator.add(alert("gpu.xid.48", "gpu:n1/2", T0), T0)
    correlator.add(alert("job.nccl.timeout", "node:n1", T0 + 5), T0 + 5)
    result = correlator.add(alert("gpu.xid.92", "gpu:n1/2", T0 + 10), T0 + 10)

    assert result is not None
    assert result.incident.explanation == (
        "gpu:n1/2 reported High single-bit ECC error rate (Xid 92) at 06:13:30Z; "
        "2 related alerts on n1; likely causes: degrading HBM."
    )


def test_a_fault_the_library_does_not_know_is_named_by_its_id(
    correlator: Correlator, alert: MakeAlert,
) -> None:
    result = correlator.add(alert("vendor.custom", "node:n1", T0), T0)

    assert result is not None
    assert result.incident.title == "vendor.custom on node:n1"
    assert result.incident.explanation == "node:n1 reported vendor.custom at 06:13:20Z."
