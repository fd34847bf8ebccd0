"""Metric samples as columns, the form detectors read.

A detection process handles hundreds of thousands of samples a second; a Python object per
sample would cost more than the detection itself. So samples travel as three numpy columns
(series id, time, value), and what the samples have in common (host, metric name, labels)
is stored once per series in a `SeriesTable`.

Series ids are process-wide, like interned strings: every frame built in a process numbers
its series in the shared `SERIES` table unless given another, so a detector may keep its
per-series state in arrays or dicts indexed by id and trust an id to mean the same series in
every frame it sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vigil.otlp import MetricBatch, MetricKind, MetricSample

HOST_ATTR = "host.name"

_SeriesKey = tuple[str, str, str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class SeriesTable:
    """Every series this process has seen, numbered in order of first sight."""

    hosts: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    kinds: list[MetricKind] = field(default_factory=list)
    labels: list[Mapping[str, str]] = field(default_factory=list)  # data-point attributes
    resources: list[Mapping[str, str]] = field(default_factory=list)
    _ids: dict[_SeriesKey, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def intern(self, resource: Mapping[str, str], name: str, kind: MetricKind,
               labels: Mapping[str, str]) -> int:
        """The id of this series, numbering it if it is new."""
        host = resource.get(HOST_ATTR, "")
        key = (host, name, kind, tuple(sorted(labels.items())))
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.names)
            self.hosts.append(host)
            self.names.append(name)
            self.kinds.append(kind)
            self.labels.append(labels)
            self.resources.append(resource)
        return found


SERIES = SeriesTable()

Int64s = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MetricFrame:
    """Samples as parallel columns; `series[i]` names sample i's series in `table`."""

    table: SeriesTable
    series: Int64s
    times: Floats  # unix seconds
    values: Floats

    def __len__(self) -> int:
        return len(self.series)

    @classmethod
    def from_batches(cls, batches: Iterable[MetricBatch],
                     table: SeriesTable | None = None) -> MetricFrame:
        """Columns of decoded batches (tests, offline tools; the stage decodes straight to this)."""
        table = SERIES if table is None else table
        ids: list[int] = []
        times: list[float] = []
        values: list[float] = []
        for batch in batches:
            for sample in batch.samples:
                ids.append(table.intern(batch.resource, sample.name, sample.kind, sample.labels))
                times.append(sample.timestamp)
                values.append(sample.value)
        return cls.of(table, ids, times, values)

    @classmethod
    def of(cls, table: SeriesTable, ids: list[int], times: list[float],
           values: list[float]) -> MetricFrame:
        return cls(table, np.asarray(ids, dtype=np.int64), np.asarray(times, dtype=np.float64),
                   np.asarray(values, dtype=np.float64))

    @classmethod
    def concat(cls, frames: list[MetricFrame]) -> MetricFrame:
        """One frame of several (same table), rows in the order given."""
        if len(frames) == 1:
            return frames[0]
        table = frames[0].table if frames else SERIES
        if any(f.table is not table for f in frames):
            raise ValueError("frames numbered in different series tables cannot be joined")
        return cls(table, np.concatenate([f.series for f in frames]),
                   np.concatenate([f.times for f in frames]),
                   np.concatenate([f.values for f in frames]))

    def samples(self) -> Iterator[tuple[int, MetricSample]]:
        """(series id, sample) for each row: for detectors that want objects, at objects' cost."""
        table = self.table
        for sid, t, v in zip(self.series.tolist(), self.times.tolist(), self.values.tolist(),
                             strict=True):
            yield sid, MetricSample(table.names[sid], v, table.labels[sid], t, table.kinds[sid])
