"""Topology fixtures: hand-made clusters read from tests/topology/data/*.yaml.

The format is tiny: ``entities: [{id, attrs}]`` and ``relations: [[src, kind, dst]]``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from vigil.topology.graph import Topology
from vigil.topology.model import RelationKind

DATA = Path(__file__).parent / "data"


def read_topology(path: Path) -> Topology:
    """Build a Topology from a fixture file, failing loudly on anything malformed."""
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or set(doc) - {"entities", "relations"}:
        raise ValueError(f"{path}: expected a mapping with keys entities and relations")
    topo = Topology()
    for item in doc.get("entities") or []:
        if not isinstance(item, dict) or set(item) - {"id", "attrs"} or "id" not in item:
            raise ValueError(f"{path}: entity {item!r} must be {{id, attrs}}")
        attrs = item.get("attrs") or {}
        for key, value in attrs.items():
            if not isinstance(value, str):
                raise ValueError(f"{path}: {item['id']}: attr {key} = {value!r} is not a "
                                 "string; quote it")
        topo.add_entity(item["id"], attrs)
    for triple in doc.get("relations") or []:
        if not isinstance(triple, list) or len(triple) != 3:
            raise ValueError(f"{path}: relation {triple!r} must be [src, kind, dst]")
        src, kind, dst = triple
        topo.add_relation(src, RelationKind(kind), dst)
    return topo


@pytest.fixture
def load_fixture() -> Callable[[str], Topology]:
    """Read ``data/NAME.yaml``; each call builds a fresh Topology the test may change."""
    return lambda name: read_topology(DATA / f"{name}.yaml")


@pytest.fixture
def small(load_fixture: Callable[[str], Topology]) -> Topology:
    """The cluster drawn at the top of data/small.yaml."""
    return load_fixture("small")
