"""Edges of high-degree entities grouped by relation kind, so traversals skip past hubs.

A shared volume is mounted by every node and a partition has every node as a member: a
traversal that wants only a hub's `contains` edges should not test its 12,500 `mounts`.
"""

from __future__ import annotations

from collections.abc import Mapping

from vigil.topology.model import RelationKind

HUB_DEGREE = 64  # below this, scanning the edges is as cheap as looking them up


class HubIndex:
    """Per (entity, direction), the neighbours by relation kind; built on first use and
    forgotten when the entity gains an edge in that direction."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, bool], dict[RelationKind, list[str]]] = {}

    def groups(self, entity: str, outgoing: bool,
               edges: Mapping[str, Mapping[str, object]]) -> dict[RelationKind, list[str]]:
        key = (entity, outgoing)
        found = self._groups.get(key)
        if found is None:
            found = {}
            for other, data in edges.items():
                found.setdefault(data["kind"], []).append(other)  # type: ignore[arg-type]
            self._groups[key] = found
        return found

    def forget(self, src: str, dst: str) -> None:
        self._groups.pop((src, True), None)
        self._groups.pop((dst, False), None)
