"""The learned detector: models fitted on each entity kind's healthy windows score its windows.

Each feature set of `learned_features.FEATURE_SETS` (GPU, NIC port, host) has one model. A
window's rows (one per entity) are scored, then kept in a bounded reservoir of healthy
history if they scored below the threshold and their entity is in no anomalous episode, so a
fault does not teach the model to expect itself. Models are fitted by sample time: first once
`min_history_s` of windows and `min_fit_rows` rows are in (until then nothing is scored, so
nothing is raised), then every `refit_every_s`, at most one set per window.

Score, in [0, 1]: the larger of two, both learnt from the training rows.
- Forest: ``raw = -IsolationForest.score_samples(x)``, the paper's 2^(-mean path / c(n)) in
  (0, 1]. ``reference`` is its `REFERENCE_QUANTILE` over the training rows (how strange
  healthy history gets), and ``forest = clip((raw - reference) / (1 - reference), 0, 1)``:
  0 up to the strangest healthy rows, 1 for a row isolated at the first split. It finds rows
  in the holes of healthy history: each feature normal, their combination never seen.
- Envelope: a forest splits only inside the training range, so a row far outside it lands in
  the leaf of the most extreme healthy row and scores no higher (a GPU 30 C hotter than any
  seen scores like the hottest healthy one). So the model also keeps each feature's healthy
  range (training min and max) and robust spread (MAD); with z the largest distance outside
  the range in spreads, ``envelope = z² / (z² + Z_HALF²)``, 0.5 at `Z_HALF`, as
  `baseline.RobustBaseline` maps its z.

Decision, separate from the score: an entity is anomalous in a window when its score
reaches `threshold`; `persist_windows` anomalous windows in a row raise one alert, and the
episode ends (another may be raised) after `clear_windows` windows in a row below it. An
episode that lasts `accept_after_s` is taken as the new normal and its windows are learnt
again. A model that finds most of its fleet anomalous in one window (`STALE_SHARE`) is not
believed: it was fitted on another cluster or before a fleet-wide change; it is relearnt.

Fault id. Library ids name known faults (``gpu.xid.79``). A learned finding is an anomaly of
no known mode, the way `offline_logs` reports a rare line as anomaly ``rare_template`` with no
fault id; an `Alert` needs one, so it is ``anomaly.<kind>``: ``anomaly.learned``. Severity
info: the correlator takes any rule's alert on the node as the root cause before this one.

Persistence: each model is pickled (scikit-learn's documented way) with its feature list,
fit time and scikit-learn version to ``<model_dir>/<set>.pkl``, written to a temporary file
and renamed. A file whose features or scikit-learn version differ is ignored with a warning.
Loading a pickle runs code from it: `model_dir` must be writable by Vigil alone.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from vigil.diagnosis.learned_features import FEATURE_SETS, FeatureSet, FeatureWindows, Window
from vigil.diagnosis.library import FaultLibrary

from vigil.frames import Floats, MetricFrame
from vigil.otlp import LogBatch
from vigil.records import Alert, Severity

log = logging.getLogger(__name__)

FAULT_ID: Final = "anomaly.learned"
FORMAT: Final = 1  # of the model files; a change makes older files incompatible
REFERENCE_QUANTILE: Final = 0.999
STALE_SHARE: Final = 0.5  # of a window's entities anomalous at once: the model is wrong
STALE_MIN_ENTITIES: Final = 8  # ... judged only with at least this many scored
TOP_FEATURES: Final = 3
MAD_TO_SIGMA: Final = 1.4826
Z_HALF: Final = 6.0  # spreads outside the healthy range at which the envelope score is 0.5


class _Forest:
    """A fitted IsolationForest, scored through its trees' low-level `tree_.apply`.

    Equal to ``-forest.score_samples(x)``, without the per-call joblib dispatch and input
    checks that make scikit-learn's version cost milliseconds even for a handful of rows.
    """

    def __init__(self, forest: IsolationForest) -> None:
        self.trees = [t.tree_ for t in forest.estimators_]
        self.columns = [np.asarray(c) for c in forest.estimators_features_]
        self.lengths = [t.compute_node_depths() - 1.0 + _path_length(t.n_node_samples)
                        for t in self.trees]
        self.norm = len(self.trees) * float(_path_length(np.array([forest.max_samples_]))[0])

    def raw(self, x: Floats) -> Floats:
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # what the trees were fitted on
        depth = np.zeros(len(x))
        for tree, columns, lengths in zip(self.trees, self.columns, self.lengths, strict=True):
            depth += lengths[tree.apply(np.ascontiguousarray(x32[:, columns]))]
        out: Floats = 2.0 ** (-depth / self.norm) if self.norm > 0 else np.ones(len(x))
        return out


def _path_length(n: Any) -> Floats:
    """c(n): the mean path length of an unsuccessful search in a binary tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        longer = 2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n
    out: Floats = np.where(n > 2, longer, np.where(n == 2, 1.0, 0.0))
    return out


@dataclass(slots=True)
class _Model:
    forest: IsolationForest
    fitted_at: float
    median: Floats  # per feature, of the training rows: what evidence is measured from
    spread: Floats  # ... robust standard deviation (MAD), floored
    low: Floats  # ... smallest and largest: the healthy range
    high: Floats
    reference: float  # REFERENCE_QUANTILE of the training rows' raw scores
    scorer: _Forest = field(init=False)

    def __post_init__(self) -> None:
        self.scorer = _Forest(self.forest)

    def forest_score(self, x: Floats) -> Floats:
        out: Floats = np.clip((self.scorer.raw(x) - self.reference)
                              / max(1.0 - self.reference, 1e-9), 0.0, 1.0)
        return out

    def envelope_score(self, x: Floats) -> Floats:
        outside = np.maximum(np.maximum(self.low - x, x - self.high), 0.0) / self.spread
        z = outside.max(axis=1)
        out: Floats = z * z / (z * z + Z_HALF * Z_HALF)
        return out

    def score(self, x: Floats) -> Floats:
        out: Floats = np.maximum(self.forest_score(x), self.envelope_score(x))
        return out


@dataclass(slots=True)
class _Episode:
    streak: int = 0  # anomalous windows in a row
    since: float = 0.0  # start of the episode's first anomalous window
    alerted: bool = False
    quiet: int = 0  # windows in a row below the threshold since the alert


@dataclass(slots=True)
class _SetState:
    """One feature set's model, healthy history and episodes."""

    rows: Floats  # reservoir, a ring of at most `len(rows)` healthy feature rows
    size: int = 0
    at: int = 0
    since: float | None = None  # start of the first window in the reservoir
    turn: int = 0  # which of every `period` rows a window keeps (see `LearnedDetector._keep`)
    model: _Model | None = None
    episodes: dict[str, _Episode] = field(default_factory=dict)

    def keep(self, rows: Floats) -> None:
        rows = rows[-len(self.rows):]
        self.rows[(self.at + np.arange(len(rows))) % len(self.rows)] = rows
        self.at = (self.at + len(rows)) % len(self.rows)
        self.size = min(self.size + len(rows), len(self.rows))

    def forget(self) -> None:
        self.size = self.at = 0
        self.since = None


class LearnedDetector:
    """Scores entities' windows with models learnt from their healthy history (see module).

    `library` is unused (the registry builds every detector from it). `now` is when alerts
    are raised; windows, fits and refits go by sample time.
    """

    name = "learned"

    def __init__(self, library: FaultLibrary, model_dir: Path | None = None,
                 window_s: float = 30.0, refit_every_s: float = 3600.0,
                 threshold: float = 0.35, persist_windows: int = 2, clear_windows: int = 10,
                 min_history_s: float = 600.0, min_fit_rows: int = 128,
                 history_s: float = 7200.0, reservoir_rows: int = 4096,
                 accept_after_s: float = 7200.0,
                 n_estimators: int = 40, seed: int = 0,
                 feature_sets: tuple[FeatureSet, ...] = FEATURE_SETS) -> None:
        self.model_dir = Path(".vigil/models") if model_dir is None else model_dir
        self.window_s, self.refit_every_s = window_s, refit_every_s
        self.threshold, self.persist_windows = threshold, persist_windows
        self.clear_windows, self.accept_after_s = clear_windows, accept_after_s
        self.min_history_s, self.min_fit_rows = min_history_s, min_fit_rows
        self.n_estimators, self.seed, self.history_s = n_estimators, seed, history_s
        # Rows a window may add to the reservoir: few enough that it spans `history_s` (the
        # model remembers hours, not the last few windows); before the first fit, enough to
        # fill it in `min_history_s`.
        self.quota = max(1, math.ceil(reservoir_rows * window_s / history_s))
        self.warmup_quota = max(1, math.ceil(reservoir_rows * window_s / min_history_s))
        self.fits = 0
        self._windows = FeatureWindows(feature_sets, window_s)
        self._sets = {fs.name: _SetState(np.zeros((reservoir_rows, len(fs.features))))
                      for fs in feature_sets}
        for fs in feature_sets:
            self._sets[fs.name].model = self._load(fs)

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]:
        return []

    def observe_metrics(self, frame: MetricFrame, now: float) -> list[Alert]:
        alerts: list[Alert] = []
        fitted = False  # at most one fit per call: the others wait a window
        for window in self._windows.add(frame):
            alerts += self._judge(window, now)
            if not fitted:
                fitted = self._maybe_fit(window.feature_set, window.start + self.window_s)
        return alerts

    def scores(self, window: Window) -> Floats | None:
        """Each row's score in [0, 1], or None while the set has no model."""
        model = self._sets[window.feature_set.name].model
        return None if model is None else model.score(window.matrix)

    def fitted_at(self, feature_set: str) -> float | None:
        """Sample time the set's model was fitted at, or None while it has none."""
        model = self._sets[feature_set].model
        return None if model is None else model.fitted_at

    def _judge(self, window: Window, now: float) -> list[Alert]:
        state = self._sets[window.feature_set.name]
        if state.since is None:
            state.since = window.start
        model = state.model
        if model is None:  # still learning: everything is history, nothing is judged
            self._keep(state, window.matrix)
            return []
        scores = model.score(window.matrix)
        above = scores >= self.threshold
        if len(scores) >= STALE_MIN_ENTITIES and above.mean() >= STALE_SHARE:
            log.warning("learned model disagrees with most of its fleet; relearning",
                        extra={"model": window.feature_set.name,
                               "anomalous": int(above.sum()), "entities": len(scores)})
            state.model = None
            state.episodes.clear()
            state.forget()
            return []
        alerts: list[Alert] = []
        for i in np.flatnonzero(above).tolist():
            episode = state.episodes.setdefault(window.entities[i], _Episode())
            if episode.streak == 0 and not episode.alerted:  # a new episode
                episode.since = window.start
            episode.streak += 1
            episode.quiet = 0
            if episode.streak >= self.persist_windows and not episode.alerted:
                episode.alerted = True
                alerts.append(self._alert(window, i, float(scores[i]), episode, model, now))
        healthy = ~above
        index = {e: i for i, e in enumerate(window.entities)} if state.episodes else {}
        for entity, episode in list(state.episodes.items()):
            row = index.get(entity)
            if row is None:
                continue
            # An episode's windows, quiet ones too, are not healthy history; but what has
            # lasted `accept_after_s` is the new normal (a job ended, its GPUs idle), and
            # were it never learnt it would stay an anomaly for good.
            healthy[row] = window.start - episode.since >= self.accept_after_s
            if not above[row]:
                episode.streak = 0
                episode.quiet += 1
                if not episode.alerted or episode.quiet >= self.clear_windows:
                    del state.episodes[entity]
        self._keep(state, window.matrix[healthy])
        return alerts

    def _keep(self, state: _SetState, rows: Floats) -> None:
        # Every entity in turn rather than a random few: a state that only a handful of
        # entities are in (the GPUs of the one node without a job) is learnt, not left to
        # the luck of the draw and then flagged forever.
        quota = self.quota if state.model is not None else self.warmup_quota
        if len(rows) > quota:
            period = math.ceil(len(rows) / quota)
            rows = rows[state.turn % period::period]
            state.turn += 1
        state.keep(rows)

    def _maybe_fit(self, fs: FeatureSet, end: float) -> bool:
        state = self._sets[fs.name]
        if state.since is None or state.size < self.min_fit_rows:
            return False
        # A model in hand (one loaded at start-up, say) is replaced only by one fitted on at
        # least as much history as a refit period gathers, not on a restart's first minutes.
        needed = self.min_history_s if state.model is None else max(
            self.min_history_s, min(self.refit_every_s, self.history_s))
        if end - state.since < needed:
            return False
        if state.model is not None and end - state.model.fitted_at < self.refit_every_s:
            return False
        state.model = self._fit(state.rows[:state.size], end)
        self.fits += 1
        self._save(fs, state.model)
        return True

    def _fit(self, rows: Floats, end: float) -> _Model:
        forest = IsolationForest(n_estimators=self.n_estimators,
                                 max_samples=min(256, len(rows)),
                                 random_state=self.seed).fit(rows)
        median = np.median(rows, axis=0)
        deviation = np.abs(rows - median)
        # A feature flat in training (MAD 0) still needs a scale: its mean deviation, then
        # a sliver of its level, so a change in it shows as a large, finite z.
        spread = np.median(deviation, axis=0) * MAD_TO_SIGMA
        spread = np.where(spread > 0, spread, deviation.mean(axis=0))
        spread = np.maximum(spread, np.maximum(np.abs(median) * 1e-3, 1e-9))
        low, high = rows.min(axis=0), rows.max(axis=0)
        model = _Model(forest, end, median, spread, low, high, reference=0.0)
        model.reference = float(np.quantile(model.scorer.raw(rows), REFERENCE_QUANTILE))
        return model

    def _alert(self, window: Window, i: int, score: float, episode: _Episode, model: _Model,
               now: float) -> Alert:
        fs = window.feature_set
        row = window.matrix[i]
        z = (row - model.median) / model.spread
        top = np.argsort(-np.abs(z))[:TOP_FEATURES].tolist()
        labels = [fs.features[j].label for j in top]
        evidence = {
            "score": f"{score:.3f}", "threshold": f"{self.threshold:g}", "model": fs.name,
            "window_start": f"{episode.since:.0f}", "window_s": f"{self.window_s:g}",
            "windows": str(episode.streak), "fitted_at": f"{model.fitted_at:.0f}",
            "features": ", ".join(labels),
        }
        for j, label in zip(top, labels, strict=True):
            evidence[label] = (f"{row[j]:.4g} (healthy median {model.median[j]:.4g}, "
                               f"z {z[j]:+.1f})")
        entity = window.entities[i]
        return Alert(fault_id=FAULT_ID, entity=entity, node=window.nodes[i],
                     severity=Severity.INFO,
                     summary=f"{entity} unlike its healthy history: {', '.join(labels)}",
                     detector=self.name, observed_at=episode.since, detected_at=now,
                     evidence=evidence)

    # --- persistence -------------------------------------------------------------------
    def _path(self, fs: FeatureSet) -> Path:
        return self.model_dir / f"{fs.name}.pkl"

    def _save(self, fs: FeatureSet, model: _Model) -> None:
        payload = {"format": FORMAT, "features": fs.labels, "sklearn": sklearn.__version__,
                   "fitted_at": model.fitted_at, "forest": model.forest,
                   "median": model.median, "spread": model.spread, "low": model.low,
                   "high": model.high, "reference": model.reference}
        temporary: Path | None = None
        try:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.model_dir, prefix=f".{fs.name}.",
                                             suffix=".tmp", delete=False) as out:
                temporary = Path(out.name)
                pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._path(fs))
        except OSError as exc:  # a model not saved is relearnt after a restart, no worse
            if temporary is not None:
                temporary.unlink(missing_ok=True)
            log.warning("learned model not saved", extra={"model": fs.name, "error": exc})

    def _load(self, fs: FeatureSet) -> _Model | None:
        path = self._path(fs)
        if not path.exists():
            return None
        try:
            with path.open("rb") as source:
                payload = pickle.load(source)
            reason = _incompatible(payload, fs)
            if reason is None:
                median, spread, low, high = (np.asarray(payload[k], dtype=np.float64)
                                             for k in ("median", "spread", "low", "high"))
                return _Model(payload["forest"], float(payload["fitted_at"]), median, spread,
                              low, high, float(payload["reference"]))
        except Exception as exc:  # a model only saves relearning: never a reason to stop
            reason = f"unreadable: {type(exc).__name__}: {exc}"
        log.warning("learned model ignored", extra={"path": str(path), "reason": reason})
        return None


def _incompatible(payload: object, fs: FeatureSet) -> str | None:
    """Why a loaded payload cannot serve `fs`, or None when it can."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return "not a model file of this format"
    if tuple(payload.get("features", ())) != fs.labels:
        return f"features {payload.get('features')} differ from {list(fs.labels)}"
    if payload.get("sklearn") != sklearn.__version__:
        return f"fitted with scikit-learn {payload.get('sklearn')}, not {sklearn.__version__}"
    forest = payload.get("forest")
    if not isinstance(forest, IsolationForest) or forest.n_features_in_ != len(fs.features):
        return "not an IsolationForest over these features"
    return None
