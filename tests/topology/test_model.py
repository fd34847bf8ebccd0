"""Tests for the topology's kinds, typed ids and the impact direction of each relation."""

from __future__ import annotations

import pytest
from vigil.topology.model import (
    IMPACT,
    IMPACT_BACKWARD,
    IMPACT_FORWARD,
    PHYSICAL,
    EntityKind,
    Flow,
    RelationKind,
    entity_id,
    kind_of,
    normalize_pci,
    owner_of,
    parts_of,
)


def test_entity_kinds_are_the_documented_set() -> None:
    assert [k.value for k in EntityKind] == [
        "region", "cluster", "rack", "power", "node", "gpu", "nvlink", "nvswitch", "nic",
        "switch", "port", "link", "storage", "volume", "mount", "partition", "job", "rank",
        "pod", "container", "service",
    ]


def test_relation_kinds_are_the_documented_set() -> None:
    assert {k.value for k in RelationKind} == {
        "contains", "connects", "mounts", "runs_on", "member_of", "depends_on", "calls",
    }


@pytest.mark.parametrize(
    ("entity", "kind"),
    [("node:gpu-a-017", EntityKind.NODE), ("gpu:gpu-a-017/3", EntityKind.GPU),
     ("nic:gpu-a-017/mlx5_2", EntityKind.NIC), ("switch:leaf-12", EntityKind.SWITCH),
     ("link:leaf-12/p7", EntityKind.LINK), ("storage:sfs-1", EntityKind.STORAGE),
     ("job:llm-70b-run3", EntityKind.JOB), ("rank:llm-70b-run3/123", EntityKind.RANK),
     ("pod:ns/name", EntityKind.POD)],
)
def test_kind_of_reads_the_prefix_of_design_ids(entity: str, kind: EntityKind) -> None:
    assert kind_of(entity) is kind


@pytest.mark.parametrize("bad", ["toaster:t-1", "gpu-a-017", "node:", ":x", ""])
def test_kind_of_rejects_ids_without_a_known_kind_naming_the_id(bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        kind_of(bad)


def test_entity_id_joins_parts_and_round_trips() -> None:
    assert entity_id(EntityKind.GPU, "gpu-a-017", 3) == "gpu:gpu-a-017/3"
    assert entity_id(EntityKind.POD, "ns", "name") == "pod:ns/name"
    assert entity_id("rank", "llm-70b-run3", 123) == "rank:llm-70b-run3/123"
    built = entity_id(EntityKind.NIC, "gpu-a-017", "mlx5_2")
    assert kind_of(built) is EntityKind.NIC
    assert parts_of(built) == ("gpu-a-017", "mlx5_2")
    assert owner_of(built) == "gpu-a-017"
    assert owner_of("link:leaf-12/p7") == "leaf-12"
    assert owner_of("node:gpu-a-017") == "gpu-a-017"


@pytest.mark.parametrize(("kind", "parts"), [("toaster", ("x",)), ("node", ()), ("gpu", ("a", ""))])
def test_entity_id_rejects_unknown_kinds_and_empty_parts(kind: str, parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="kind"):
        entity_id(kind, *parts)


def test_every_relation_has_an_impact_direction() -> None:
    assert set(IMPACT) == set(RelationKind)
    assert set(RelationKind) == IMPACT_FORWARD | IMPACT_BACKWARD
    assert not IMPACT_FORWARD & IMPACT_BACKWARD


@pytest.mark.parametrize(
    ("relation", "flow"),
    [(RelationKind.CONTAINS, Flow.FORWARD),  # a dead rack takes its nodes
     (RelationKind.RUNS_ON, Flow.BACKWARD),  # a dead GPU takes the rank on it
     (RelationKind.MEMBER_OF, Flow.FORWARD),  # a dead rank kills its job
     (RelationKind.CONNECTS, Flow.FORWARD),  # a dead leaf cuts its links
     (RelationKind.MOUNTS, Flow.BACKWARD),  # a dead volume stalls who mounts it
     (RelationKind.DEPENDS_ON, Flow.BACKWARD),  # a dead feed darkens its rack
     (RelationKind.CALLS, Flow.BACKWARD)],  # a dead service fails its callers
)
def test_impact_directions_match_the_documented_table(relation: RelationKind, flow: Flow) -> None:
    assert IMPACT[relation] is flow


def test_physical_relations_are_cables_enclosures_and_power() -> None:
    assert {RelationKind.CONTAINS, RelationKind.CONNECTS, RelationKind.DEPENDS_ON} == PHYSICAL


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("00000000:18:00.0", "0000:18:00.0"), ("0000:18:00.0", "0000:18:00.0"),
     ("18:00.0", "0000:18:00.0"), ("00000000:2A:00.0", "0000:2a:00.0"),
     ("00000001:2a:00.1", "0001:2a:00.1"), (" 0000:1A:00.0 ", "0000:1a:00.0"),
     ("not-a-pci-id", "not-a-pci-id")],
)
def test_normalize_pci_gives_one_spelling(spelling: str, canonical: str) -> None:
    assert normalize_pci(spelling) == canonical
