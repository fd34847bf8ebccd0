"""Window features for the learned detector: which metrics it reads, and how frames become rows.

`FEATURE_SETS` is the feature list, as data: one set per model, each naming the kind of entity
it describes and its metrics. A gauge's feature is its mean over the window; a counter's
(``rate=True``) is its rise per second over the window, the least-squares slope of value on
time, which uses every sample (not just the first and last) and needs no per-sample state.

Only signals that belong to one entity are listed. A job's step time and tokens/s are the
same on every node of the job (the slowest node sets the pace), and checkpoint time follows
the shared file system, so one straggler or one slow storage system would move every node at
once: an alert storm, not a diagnosis. A node's compute time is its own, but its level is set
by the job's model, so a fleet-wide model would only learn which jobs run; stragglers are
found by comparing a node with its job's peers, which is the peer detector's work. Sparse
error counters (ECC, PCIe replays, IB symbol errors) are left to the rules: a healthy count
is almost always 0, so one harmless error would look as rare to a model as a fault does.

Cost. `FeatureWindows.add` only appends a frame's columns to a list (a microsecond or two per
frame, whatever its size); the columns are binned into per-slot sums with `np.bincount` when
a window closes or the list grows long, a few tens of nanoseconds per sample. A slot is one
(entity, feature) pair; each series maps to one slot or to none (-1), and an entity's
features take consecutive slots. Python work is per series (once, when first seen) and per
entity per window, never per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from vigil.topology.identity import ENTITY_ATTR, EntityResolver

from vigil.frames import Floats, Int64s, MetricFrame, SeriesTable


@dataclass(frozen=True, slots=True)
class Feature:
    metric: str  # as the exporter names it
    rate: bool = False  # a counter: its rise per second over the window, not its mean

    @property
    def label(self) -> str:
        return f"rate({self.metric})" if self.rate else self.metric


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """The features of one model; `name` also names the model's file."""

    name: str
    entity_kind: str  # the kind its entity ids have: "gpu" for "gpu:<host>/<index>"
    features: tuple[Feature, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(f.label for f in self.features)


FEATURE_SETS: Final = (
    FeatureSet("gpu", "gpu", (  # dcgm-exporter
        Feature("DCGM_FI_DEV_GPU_TEMP"),
        Feature("DCGM_FI_DEV_MEMORY_TEMP"),
        Feature("DCGM_FI_DEV_POWER_USAGE"),
        Feature("DCGM_FI_DEV_SM_CLOCK"),
        Feature("DCGM_FI_DEV_GPU_UTIL"),
        Feature("DCGM_FI_DEV_FB_USED"),
        Feature("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", rate=True),
    )),
    FeatureSet("nic", "nic", (  # node-exporter's infiniband collector, per port
        Feature("node_infiniband_port_data_received_bytes_total", rate=True),
        Feature("node_infiniband_port_data_transmitted_bytes_total", rate=True),
    )),
    FeatureSet("host", "node", (  # node-exporter
        Feature("node_load1"),
        Feature("node_memory_MemAvailable_bytes"),
    )),
)


@dataclass(frozen=True, slots=True)
class Window:
    """One closed window of one feature set: a row per entity that reported every feature."""

    feature_set: FeatureSet
    start: float
    entities: list[str]
    nodes: list[str]
    matrix: Floats  # (entities, features)


@dataclass(slots=True)
class _Sums:
    """Per-slot sums of one window, times and values taken from a per-slot reference so
    that squares and products keep their precision (a counter can be 1e15)."""

    n: Floats
    t: Floats
    tt: Floats
    v: Floats
    tv: Floats
    ref: Floats  # per slot, a value of its own from this window (the first one binned)

    @classmethod
    def empty(cls, slots: int) -> _Sums:
        return cls(np.zeros(slots), np.zeros(slots), np.zeros(slots), np.zeros(slots),
                   np.zeros(slots), np.full(slots, np.nan))

    def add(self, slots: Int64s, times: Floats, values: Floats, size: int) -> None:
        if size > len(self.n):
            grow = size - len(self.n)
            for name in ("n", "t", "tt", "v", "tv"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow)]))
            self.ref = np.concatenate([self.ref, np.full(grow, np.nan)])
        fresh = np.isnan(self.ref[slots])
        self.ref[slots[fresh]] = values[fresh]
        values = values - self.ref[slots]
        self.n += np.bincount(slots, minlength=size)
        self.t += np.bincount(slots, times, minlength=size)
        self.tt += np.bincount(slots, times * times, minlength=size)
        self.v += np.bincount(slots, values, minlength=size)
        self.tv += np.bincount(slots, times * values, minlength=size)


@dataclass(slots=True)
class _Entities:
    """The entities of one feature set, in order of first sight, and their first slot."""

    ids: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    bases: list[int] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)


class FeatureWindows:
    """Turns frames into closed `Window`s, by sample time.

    Window k covers [k * window_s, (k + 1) * window_s) and closes once a frame `lateness_s`
    past its end arrives, so one node's scrape landing just after another's still counts.
    Samples for a window already closed are dropped (and counted in `late`).
    """

    def __init__(self, sets: tuple[FeatureSet, ...], window_s: float,
                 lateness_s: float | None = None, flush_rows: int = 1_000_000) -> None:
        self.sets = sets
        self.window_s = window_s
        self.lateness_s = min(5.0, window_s / 4) if lateness_s is None else lateness_s
        self.flush_rows = flush_rows
        self.late = 0
        self._where = {f.metric: (s, c) for s, fs in enumerate(sets)
                       for c, f in enumerate(fs.features)}
        self._resolver = EntityResolver()
        self._table: SeriesTable | None = None
        self._pending: list[tuple[Int64s, Floats, Floats]] = []
        self._pending_rows = 0
        self._clock = -math.inf  # the latest sample time seen
        self._closes_at = math.inf  # when the oldest open window closes
        self._open: dict[int, _Sums] = {}
        self._reset(None)

    def _reset(self, table: SeriesTable | None) -> None:
        self._table = table
        self._slot_of: Int64s = np.zeros(0, dtype=np.int64)
        self._slots = 0
        self._entities = [_Entities() for _ in self.sets]
        self._counter_owner: dict[int, int] = {}  # rate slot -> the series that feeds it
        self._open.clear()
        self._closed_before = -(2**62)  # windows below this index are closed

    def add(self, frame: MetricFrame) -> list[Window]:
        """Take `frame`; return the windows it closed (usually none)."""
        if frame.table is not self._table:
            closed = self._flush_and_close(math.inf)
            self._reset(frame.table)
        else:
            closed = []
        if not len(frame):
            return closed
        times = frame.times
        self._pending.append((frame.series, times, frame.values))
        self._pending_rows += len(times)
        # A frame's ends stand in for its earliest and latest times: exact for a scrape,
        # where every sample carries the same time, and only ever off by a frame otherwise.
        first, last = float(times[0]), float(times[-1])
        self._clock = max(self._clock, first, last)
        k = math.floor(min(first, last) / self.window_s)
        if k >= self._closed_before:
            self._closes_at = min(self._closes_at, (k + 1) * self.window_s + self.lateness_s)
        if self._clock >= self._closes_at:
            closed += self._flush_and_close(self._clock)
        elif self._pending_rows >= self.flush_rows:
            self._flush()
        return closed

    def _flush_and_close(self, clock: float) -> list[Window]:
        self._flush()
        closed: list[Window] = []
        for k in sorted(self._open):
            if (k + 1) * self.window_s + self.lateness_s > clock:
                break
            closed += self._close(k, self._open.pop(k))
            self._closed_before = k + 1
        self._closes_at = ((min(self._open) + 1) * self.window_s + self.lateness_s
                           if self._open else math.inf)
        return closed

    def _flush(self) -> None:
        """Bin the pending rows into their windows' sums."""
        if not self._pending or self._table is None:
            self._pending.clear()
            return
        sids = np.concatenate([p[0] for p in self._pending])
        times = np.concatenate([p[1] for p in self._pending])
        values = np.concatenate([p[2] for p in self._pending])
        self._pending.clear()
        self._pending_rows = 0
        self._learn(self._table)
        slots = self._slot_of[sids]
        keep = (slots >= 0) & np.isfinite(values)  # NaN is the rules' business (`absent`)
        slots, times, values = slots[keep], times[keep], values[keep]
        if not len(slots):
            return
        windows = np.floor(times / self.window_s).astype(np.int64)
        first, last = int(windows.min()), int(windows.max())
        for k in range(first, last + 1) if last - first < 8 else np.unique(windows).tolist():
            if k < self._closed_before:
                self.late += int(np.count_nonzero(windows == k))
                continue
            rows = slice(None) if first == last else windows == k
            sums = self._open.get(k)
            if sums is None:
                sums = self._open[k] = _Sums.empty(self._slots)
                self._closes_at = min(self._closes_at, (k + 1) * self.window_s + self.lateness_s)
            sums.add(slots[rows], times[rows] - k * self.window_s, values[rows], self._slots)

    def _learn(self, table: SeriesTable) -> None:
        """Map the series new to this detector to their slots (Python, once per series)."""
        known = len(self._slot_of)
        if known == len(table):
            return
        new = np.full(len(table) - known, -1, dtype=np.int64)
        for sid in range(known, len(table)):
            where = self._where.get(table.names[sid])
            if where is None:
                continue
            s, column = where
            labels = table.labels[sid]
            host = table.hosts[sid]
            entity = labels.get(ENTITY_ATTR) or self._resolver.resolve(
                host, labels, table.names[sid])
            if entity.partition(":")[0] != self.sets[s].entity_kind:
                continue
            slot = self._base(s, entity, host) + column
            if self.sets[s].features[column].rate:
                # Two series feeding one counter slot would make a nonsense slope (an extra
                # label, such as a pod's, changed): the newest series takes the slot over.
                older = self._counter_owner.get(slot)
                if older is not None and older < known:
                    self._slot_of[older] = -1
                elif older is not None:
                    new[older - known] = -1
                self._counter_owner[slot] = sid
            new[sid - known] = slot
        self._slot_of = np.concatenate([self._slot_of, new])

    def _base(self, s: int, entity: str, host: str) -> int:
        known = self._entities[s]
        at = known.index.get(entity)
        if at is None:
            at = known.index[entity] = len(known.ids)
            known.ids.append(entity)
            known.nodes.append(host)
            known.bases.append(self._slots)
            self._slots += len(self.sets[s].features)
        return known.bases[at]

    def _close(self, k: int, sums: _Sums) -> list[Window]:
        closed = []
        size = self._slots
        if len(sums.n) < size:
            sums.add(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), size)
        for fs, known in zip(self.sets, self._entities, strict=True):
            if not known.ids:
                continue
            slots = np.asarray(known.bases)[:, None] + np.arange(len(fs.features))
            matrix = _features(fs, sums, slots)
            complete = np.flatnonzero(np.isfinite(matrix).all(axis=1))
            if len(complete):
                closed.append(Window(fs, k * self.window_s,
                                     [known.ids[i] for i in complete.tolist()],
                                     [known.nodes[i] for i in complete.tolist()],
                                     matrix[complete]))
        return closed


def _features(fs: FeatureSet, sums: _Sums, slots: Int64s) -> Floats:
    """(entities, features): means and rates; NaN where a slot has too few samples."""
    n, t, tt, v, tv = (getattr(sums, name)[slots] for name in ("n", "t", "tt", "v", "tv"))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = sums.ref[slots] + v / n
        spread = n * tt - t * t
        slope = (n * tv - t * v) / spread
        # A negative slope is a counter reset inside the window: not a rate we can trust.
        slope = np.where((n >= 2) & (spread > 1e-9) & (slope >= 0), slope, np.nan)
    rate = np.array([f.rate for f in fs.features])
    out: Floats = np.where(rate, slope, np.where(n >= 1, mean, np.nan))
    return out
