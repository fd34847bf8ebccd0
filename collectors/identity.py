"""Every sample names its entity: a GPU's fields their GPU, an InfiniBand port's its NIC.

The resource of a batch names the node; samples about something finer carry the topology id
in a ``vigil.entity`` data-point attribute, resolved by `vigil.topology.identity` from the
labels exporters already use. Detectors then need no exporter-specific naming.
"""

from __future__ import annotations

from dataclasses import replace

from vigil.topology.identity import ENTITY_ATTR, EntityResolver

from vigil.otlp import MetricSample


def tag_samples(samples: list[MetricSample], host: str,
                resolver: EntityResolver) -> list[MetricSample]:
    """`samples`, those about an entity finer than `host` with ``vigil.entity`` added."""
    node = f"node:{host}"
    tagged = []
    for sample in samples:
        entity = resolver.resolve(host, sample.labels, sample.name)
        if entity and entity != node and sample.labels.get(ENTITY_ATTR) != entity:
            sample = replace(sample, labels={**sample.labels, ENTITY_ATTR: entity})
        tagged.append(sample)
    return tagged
