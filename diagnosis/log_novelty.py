"""Streaming log-template detector: templates never seen before, and bursts of known ones.

Lines are mined into templates with Drain3 (masks shared with `offline_logs`), and two
anomalies become alerts. Their fault ids are ``anomaly.log.<kind>``: ``anomaly.`` keeps them
apart from the library's fault modes (what a line means is unknown, only that it is odd),
``log`` names the signal, and the kind uses the vocabulary of `offline_logs`' ``anomaly``
field (``rare_template`` there):

- ``anomaly.log.new_template`` (info): a template no host has logged before, once the
  detector has learned for `warmup_s`. Novelty is cluster-wide: a host joining late, or a
  job starting on more nodes, repeats templates the others already taught it.
- ``anomaly.log.rate_spike`` (warning): one host logs one known template far more often in a
  window than it usually does; one alert per episode.

Lines a library rule matches are the rule detector's: they are kept out of templates here
(the first raw line of each masked shape decides), so nothing is reported twice.

Speed. Drain3 costs tens of microseconds a line, so it sees each masked shape once. A batch
is keyed in C: bodies joined, digits and hex letters deleted by one ``str.translate``, split
and counted; each distinct key is then looked up in an LRU cache (key -> template). Only a
missed key has its line masked with the full regexes and, if that masked shape is new too,
handed to Drain3. Rate state is updated once per (template, batch), never per line.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Final, TypeVar

from vigil.diagnosis.library import FaultLibrary
from vigil.diagnosis.log_match import LogMatcher
from vigil.diagnosis.log_templates import mask, template_miner

from vigil.frames import MetricFrame
from vigil.otlp import LogBatch, LogLine
from vigil.records import Alert, Severity

NEW_TEMPLATE: Final = "anomaly.log.new_template"
RATE_SPIKE: Final = "anomaly.log.rate_spike"
EXAMPLE_CHARS: Final = 500
_LIBRARY: Final = -1  # template id of lines a library rule matches
# Deleting hex letters along with digits keeps addresses and ids (``0x7f3a``, a container id)
# out of the key at no extra cost; words only lose letters, the same ones every time.
_VARIABLE: Final = str.maketrans("", "", "0123456789abcdefABCDEF")
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class NoveltyTuning:
    """When the detector speaks, and how much it may remember."""

    # Novelty is judged only after this long (by `now`): a fresh detector knows no template,
    # and rare healthy lines (hourly jobs, occasional kernel notices) need time to be seen.
    warmup_s: float = 3600.0
    window_s: float = 60.0  # rate windows, by the lines' own timestamps
    learn_windows: int = 15  # a (host, template) rate is judged only after this many windows
    spike_factor: float = 10.0  # a spike is this many times the usual (EWMA) window count...
    peak_factor: float = 3.0  # ...and this many times the recent peak, e.g. checkpoint bursts
    min_spike_count: int = 100  # ...and at least this many lines in the window
    quiet_windows: int = 5  # windows below threshold that end a spike episode
    mean_alpha: float = 0.1  # EWMA weight of the newest window
    peak_half_life_windows: float = 1440.0  # one day of 60 s windows
    novelty_cooldown_s: float = 300.0  # per host: a burst of new templates is one alert
    max_skew_s: float = 300.0  # line times further ahead of `now` count as `now`
    cache_size: int = 32_768  # keys and masked shapes each (LRU)
    max_key_chars: int = 2_000  # longer lines are not cached (memory bound); masked cut here
    max_templates: int = 10_000  # Drain3 clusters (LRU)
    max_series: int = 100_000  # (host, template) rate states (LRU)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.peak_half_life_windows <= 0:
            raise ValueError("window_s and peak_half_life_windows must be positive")
        if not 0.0 < self.mean_alpha <= 1.0:
            raise ValueError(f"mean_alpha must be in (0, 1], not {self.mean_alpha}")
        if min(self.cache_size, self.max_key_chars, self.max_templates, self.max_series) < 1:
            raise ValueError("cache_size, max_key_chars, max_templates and max_series must be >= 1")


@dataclass(slots=True)
class _Rate:
    """One host's rate of one template: the open window and what earlier ones looked like."""

    window: int
    first_window: int
    count: int = 0
    mean: float = 0.0  # EWMA of window counts, spikes clipped at their threshold
    peak: float = 0.0  # decaying maximum of window counts, clipped the same way
    calm: int = 0  # consecutive closed windows below threshold
    spiking: bool = False


@dataclass(slots=True)
class _Seen:
    """One template in one window of one batch."""

    count: int
    key: str  # its first line's key, to find that line for the alert


class LogNoveltyDetector:
    """See the module docstring; `tuning` holds every threshold."""

    name = "log_novelty"

    def __init__(self, library: FaultLibrary, tuning: NoveltyTuning | None = None) -> None:
        self.tuning = tuning or NoveltyTuning()
        self._matcher = LogMatcher(library)
        self._miner = template_miner(masking=False, max_clusters=self.tuning.max_templates)
        self._by_key: OrderedDict[str, int] = OrderedDict()  # digit-free key -> template
        self._by_shape: OrderedDict[str, int] = OrderedDict()  # masked line -> template
        self._rates: OrderedDict[tuple[str, int], _Rate] = OrderedDict()
        self._last_novelty: dict[str, float] = {}  # host -> when it last had a new template
        self._started: float | None = None
        self._peak_decay = 0.5 ** (1.0 / self.tuning.peak_half_life_windows)

    def observe_metrics(self, frame: MetricFrame, now: float) -> list[Alert]:
        return []

    def observe_logs(self, batch: LogBatch, now: float) -> list[Alert]:
        lines = batch.lines
        if not lines:
            return []
        if self._started is None:
            self._started = now
        learning = now - self._started < self.tuning.warmup_s
        host = batch.resource.get("host.name", "")
        bodies, keys = _keys(lines)
        counts = Counter(keys)
        template_of, created = self._templates(counts, bodies, keys)
        alerts = []
        if created and not learning:
            alert = self._novelty(host, created, counts, template_of, lines, keys, now)
            if alert is not None:
                alerts.append(alert)
        for window, seen in self._windows(lines, keys, counts, template_of, now):
            for template, entry in seen.items():
                rate = self._count(host, template, window, entry.count)
                if not learning and self._spikes(rate, window):
                    alerts.append(self._spike(host, template, rate, entry, lines, keys, now))
        return alerts

    def sizes(self) -> dict[str, int]:
        """How much the detector holds, for self-telemetry and the memory-bound test."""
        return {"keys": len(self._by_key), "shapes": len(self._by_shape),
                "templates": len(self._miner.drain.clusters), "rates": len(self._rates)}

    # --- templates -------------------------------------------------------------------------
    def _templates(self, counts: Counter[str], bodies: list[str],
                   keys: list[str]) -> tuple[dict[str, int], list[int]]:
        """Template of each distinct key; and the templates created now, first seen first."""
        template_of: dict[str, int] = {}
        created: list[int] = []
        first: dict[str, int] | None = None
        cache = self._by_key
        for key in counts:
            template = cache.get(key)
            if template is not None:
                cache.move_to_end(key)  # per distinct key, not per line: cheap enough for LRU
            else:
                if first is None:  # index of each key's first line, built in C, only on a miss
                    first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))
                template = self._learn(bodies[first[key]], created)
                if len(key) <= self.tuning.max_key_chars:
                    _put(cache, key, template, self.tuning.cache_size)
            template_of[key] = template
        return template_of, created

    def _learn(self, body: str, created: list[int]) -> int:
        """Template of a line whose key was not cached: by its masked shape, else Drain3."""
        shape = mask(body[:self.tuning.max_key_chars])
        template = self._by_shape.get(shape)
        if template is not None:
            self._by_shape.move_to_end(shape)
            return template
        if next(self._matcher.matches(body), None) is not None:
            template = _LIBRARY
        else:
            result = self._miner.add_log_message(shape)
            template = int(result["cluster_id"])
            if result["change_type"] == "cluster_created":
                created.append(template)
        _put(self._by_shape, shape, template, self.tuning.cache_size)
        return template

    def _template_text(self, template: int, fallback: str) -> str:
        cluster = self._miner.drain.id_to_cluster.get(template)
        return str(cluster.get_template()) if cluster is not None else fallback

    # --- novelty ---------------------------------------------------------------------------
    def _novelty(self, host: str, created: list[int], counts: Counter[str],
                 template_of: dict[str, int], lines: list[LogLine], keys: list[str],
                 now: float) -> Alert | None:
        last = self._last_novelty.get(host)
        if last is not None and now - last < self.tuning.novelty_cooldown_s:
            return None
        self._last_novelty[host] = now
        template = created[0]
        mine = [key for key in counts if template_of[key] == template]
        line = lines[keys.index(mine[0])]
        return Alert(
            fault_id=NEW_TEMPLATE, entity=f"node:{host}", node=host, severity=Severity.INFO,
            summary=f"{host} logged a line never seen before", detector=self.name,
            observed_at=line.timestamp, detected_at=now,
            evidence={"template": self._template_text(template, line.body)[:EXAMPLE_CHARS],
                      "count": str(sum(counts[key] for key in mine)), "baseline": "0",
                      "new_templates": str(len(created)),
                      "example": line.body[:EXAMPLE_CHARS]},
        )

    # --- rates -----------------------------------------------------------------------------
    def _windows(self, lines: list[LogLine], keys: list[str], counts: Counter[str],
                 template_of: dict[str, int], now: float) -> list[tuple[int, dict[int, _Seen]]]:
        """Per rate window the batch spans (oldest first): each template's count in it."""
        size, latest = self.tuning.window_s, now + self.tuning.max_skew_s
        first = int(min(lines[0].timestamp, latest) // size)
        last = int(min(lines[-1].timestamp, latest) // size)
        if first == last:  # the usual batch: a fraction of a second of one host's logs
            return [(first, _per_template(counts.items(), template_of))]
        # A backlog (a collector catching up, a spool replayed): bin every line by its time.
        windows = [int(min(line.timestamp, latest) // size) for line in lines]
        by_window: dict[int, list[tuple[str, int]]] = {}
        for (window, key), count in Counter(zip(windows, keys, strict=True)).items():
            by_window.setdefault(window, []).append((key, count))
        return [(w, _per_template(by_window[w], template_of)) for w in sorted(by_window)]

    def _count(self, host: str, template: int, window: int, count: int) -> _Rate:
        rates = self._rates
        rate = rates.get((host, template))
        if rate is None:
            rate = _put(rates, (host, template), _Rate(window, window), self.tuning.max_series)
        else:
            rates.move_to_end((host, template))
            if window > rate.window:
                self._close(rate, window)
        rate.count += count  # late lines (an older window) join the open one
        return rate

    def _close(self, rate: _Rate, window: int) -> None:
        """Fold the open window into the baselines; the `gap - 1` windows between had none."""
        tuning = self.tuning
        gap = window - rate.window
        threshold = self._threshold(rate)
        # Clipped at the threshold, a spike nudges the baselines instead of resetting them,
        # and a lasting new level is learned in a few windows.
        count = min(float(rate.count), threshold)
        keep = 1.0 - tuning.mean_alpha
        rate.mean = (keep * rate.mean + tuning.mean_alpha * count) * keep ** (gap - 1)
        rate.peak = max(rate.peak * self._peak_decay, count) * self._peak_decay ** (gap - 1)
        rate.calm = rate.calm + gap if rate.count < threshold else gap - 1
        if rate.spiking and rate.calm >= tuning.quiet_windows:
            rate.spiking = False
        rate.window, rate.count = window, 0

    def _threshold(self, rate: _Rate) -> float:
        tuning = self.tuning
        return max(float(tuning.min_spike_count), tuning.spike_factor * rate.mean,
                   tuning.peak_factor * rate.peak)

    def _spikes(self, rate: _Rate, window: int) -> bool:
        """Whether this window's count starts a spike episode (judged as lines arrive, so
        the alert does not wait for the window to end)."""
        if rate.spiking or window - rate.first_window < self.tuning.learn_windows:
            return False
        if rate.count < self._threshold(rate):
            return False
        rate.spiking = True
        return True

    def _spike(self, host: str, template: int, rate: _Rate, entry: _Seen,
               lines: list[LogLine], keys: list[str], now: float) -> Alert:
        line = lines[keys.index(entry.key)]
        return Alert(
            fault_id=RATE_SPIKE, entity=f"node:{host}", node=host, severity=Severity.WARNING,
            summary=(f"{host} logged one line {rate.count} times in "
                     f"{self.tuning.window_s:g} s, about {rate.mean:.1f} usually"),
            detector=self.name, observed_at=line.timestamp, detected_at=now,
            evidence={"template": self._template_text(template, line.body)[:EXAMPLE_CHARS],
                      "count": str(rate.count), "baseline": f"{rate.mean:.2f}",
                      "threshold": f"{self._threshold(rate):.0f}",
                      "window_s": f"{self.tuning.window_s:g}",
                      "example": line.body[:EXAMPLE_CHARS]},
        )


def _keys(lines: list[LogLine]) -> tuple[list[str], list[str]]:
    """Bodies (one line each) and their cache keys, the bodies without digits and hex letters.

    All in C over the joined batch. Lines differing only in numbers and hex share a key, and so
    (nearly always) a masked shape; where two shapes share one, the first seen speaks for both,
    as Drain3 would mostly have merged them anyway. A body holding a newline (a joined
    traceback) would split in two, so such a batch has its newlines replaced first.
    """
    bodies = [line.body for line in lines]
    keys = "\n".join(bodies).translate(_VARIABLE).split("\n")
    if len(keys) != len(bodies):
        bodies = [body.replace("\n", " ") for body in bodies]
        keys = "\n".join(bodies).translate(_VARIABLE).split("\n")
    return bodies, keys


def _per_template(items: Iterable[tuple[str, int]],
                  template_of: dict[str, int]) -> dict[int, _Seen]:
    """Counts of keys summed per template; library lines left out. Keys come first seen
    first, so each template keeps the key of its earliest line."""
    seen: dict[int, _Seen] = {}
    for key, count in items:
        template = template_of[key]
        if template == _LIBRARY:
            continue
        entry = seen.get(template)
        if entry is None:
            seen[template] = _Seen(count, key)
        else:
            entry.count += count
    return seen


def _put(cache: OrderedDict[_K, _V], key: _K, value: _V, bound: int) -> _V:
    cache[key] = value
    if len(cache) > bound:
        cache.popitem(last=False)
    return value
