"""False alerts per 1,000 healthy node-hours, and how soon a straggler or a hot GPU is found.

The simulator runs offline, in simulated time as fast as the CPU allows, and every step's
telemetry goes through the real detection stage (`DetectStage`, every default detector, its
de-duplication) as OTLP payloads, the bytes the collectors would publish to Kafka.

Path taken. The real scrape path (exposition text -> `parse_exposition` -> `tag_samples` ->
`encode_metrics`, a message per endpoint, as `PrometheusScrapeCollector` does) costs about
100 us a sample, mostly the text parser; 1,000 node-hours are 65 M samples, hours of CPU.
So each endpoint's payload is built that way once (again when its series set changes: a GPU
lost, a trainer gone) as a template, and each scrape writes its time and values (from the
simulator's arrays, rounded as its text prints them) into the template's data points. Every
`--verify-every` steps one node's payloads are compared, byte for byte, with the real path's;
a mismatch stops the run. Storage endpoints and logs (`LogFileCollector` tailing the
simulator's files) take the real path every step.

    .venv/bin/python bench/detect_soak.py [--nodes 64] [--hours 16] [--interval 10]
        [--warmup 1800] [--verify-every 60] [--show-alerts 5] [--json]
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from figures import print_figures  # bench/, this script's own folder
from vigil.collectors.identity import tag_samples
from vigil.collectors.log_file import LogFileCollector, TailedFile
from vigil.collectors.prometheus_scrape import parse_exposition
from vigil.diagnosis.detect import DetectStage
from vigil.diagnosis.library import load_library
from vigil.diagnosis.registry import build_detectors
from vigil.sim.cluster import Endpoint, SimCluster
from vigil.sim.telemetry import GPU_FAMILIES, NIC_FAMILIES, Telemetry
from vigil.sim.topology import ClusterSpec
from vigil.topology.identity import EntityResolver

from vigil.bus import Bus, Topic
from vigil.otlp import MetricBatch, decode_logs, encode_metrics
from vigil.records import Alert, from_json
from vigil.settings import CollectorSettings, DetectSettings

START = 1.8e9  # simulated unix time of the first step (January 2027)
FAULT_WINDOW_S = 900.0  # a fault not found within 15 simulated minutes counts as not found
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# Per metric name: the Telemetry array (or derived value) a sample comes from, and the format
# its exporter prints it with; the value a scrape sees is float(format(value, fmt)).
ARRAYS: dict[str, tuple[str, str]] = {
    **{name: (attr, ".6g") for name, _, _, attr in GPU_FAMILIES},
    **{name: (attr, ".10g") for name, _, _, attr in NIC_FAMILIES},
    "node_load1": ("load1", ".6g"), "node_memory_MemAvailable_bytes": ("mem_available", ".10g"),
}
TRAINER: dict[str, Callable[[Telemetry], Floats]] = {  # as Telemetry.trainer computes them
    "training_step_time_seconds": lambda t: t.step_time,
    "training_compute_time_seconds": lambda t: t.compute_time,
    "training_iteration": lambda t: np.floor(t.iteration),
    "training_tokens_per_second": lambda t: np.divide(
        8 * 4096 * 4, t.step_time, out=np.zeros_like(t.step_time), where=t.step_time != 0),
    "training_loss": lambda t: t.loss,
    "training_checkpoint_duration_seconds": lambda t: t.checkpoint_s,
}
ARRAYS.update({name: (name, ".6g") for name in TRAINER})
STATE_KEYS = list(dict.fromkeys(key for key, _ in ARRAYS.values()))  # the state vector's parts
FORMATS = (".6g", ".10g")


@dataclass(frozen=True, slots=True)
class Message:
    """What the stage reads from a ConsumerRecord."""

    topic: str
    value: bytes
    key: str | None = None


@dataclass
class MemoryBus:
    """The bus in memory: the stage's alerts and dead letters, the log collector's messages."""

    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    logs: list[Message] = field(default_factory=list)
    log_lines: int = 0

    def publish(self, topic: str, value: bytes, key: str | None = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        if topic == Topic.ALERTS:
            self.alerts.append(from_json(Alert, value))
        elif topic == Topic.LOGS:
            self.logs.append(Message(topic, value, key))
            self.log_lines += sum(len(batch.lines) for batch in decode_logs(value))

    def dead_letter(self, message: Any, reason: str, stage: str) -> None:
        self.dead_letters.append(reason)


@dataclass(frozen=True, slots=True)
class Points:
    """Payload bytes and where each data point's value and time lie in them: one endpoint's,
    or every live endpoint's laid end to end, so that a step patches them in one go."""

    payload: bytearray
    value_at: Ints  # offset of each point's value tag (0x21); its 8 bytes follow
    time_at: Ints  # offset of each point's time tag (0x19); likewise
    state_index: Ints  # each point's position in the step's state vector
    fmt: Ints  # each point's format, an index in FORMATS
    spans: tuple[tuple[int, int, str], ...] = ()  # (start, end, host) of each endpoint's part


class ScrapeFeed:
    """Each step's metric messages, as the scrape collector would publish them (see above)."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.resolver = EntityResolver()
        self.endpoints = [e for e in cluster.endpoints() if e.exporter != "storage"]
        self.storage = [e for e in cluster.endpoints() if e.exporter == "storage"]
        self.layout: dict[str, tuple[int, int]] = {}  # state key -> (offset, columns)
        offset = 0
        for key in STATE_KEYS:
            array = getattr(cluster.tel, key, None)  # None: a trainer value derived each step
            columns = array.shape[1] if array is not None and array.ndim == 2 else 1
            self.layout[key] = (offset, columns)
            offset += len(cluster.topo.nodes) * columns
        self._templates: dict[tuple[str, tuple[int, ...]], Points] = {}
        self._plan_key: tuple[tuple[int, ...] | None, ...] = ()
        self._plan: Points | None = None
        self.samples = self.verified = 0

    def state(self) -> Floats:
        tel = self.cluster.tel
        return np.concatenate([TRAINER[k](tel) if k in TRAINER else getattr(tel, k).ravel()
                               for k in STATE_KEYS]).astype(np.float64)

    def real_batch(self, endpoint: Endpoint, now: float) -> MetricBatch | None:
        """One endpoint scraped as PrometheusScrapeCollector.collect does; None: no answer."""
        c = self.cluster
        if endpoint.exporter != "storage" and c.unreachable(endpoint.host):
            return None  # the server answers 503
        text = {"dcgm": c.exposition, "node_exporter": c.node_exporter, "trainer": c.trainer,
                "storage": c.storage}[endpoint.exporter](endpoint.host)
        if text is None:
            return None  # no training process: 404
        samples = tag_samples(parse_exposition(text, now), endpoint.host, self.resolver)
        return MetricBatch({"host.name": endpoint.host, "vigil.entity": f"node:{endpoint.host}",
                            "service.name": endpoint.service,
                            "url.full": "http://127.0.0.1:9400" + endpoint.path}, samples)

    def _series_key(self, endpoint: Endpoint) -> tuple[int, ...] | None:
        """What decides an endpoint's series set; None when it does not answer."""
        c, row = self.cluster, self.cluster.topo.index[endpoint.host]
        if c.tel.unreachable[row]:
            return None
        if endpoint.exporter == "dcgm":
            return tuple(np.flatnonzero(~c.tel.gpu_lost[row]).tolist())
        if endpoint.exporter == "trainer":
            return (1,) if endpoint.host in c.topo.job_of and c.tel.job_running[row] else None
        return ()

    def _template(self, endpoint: Endpoint, key: tuple[int, ...], now: float) -> Points:
        """Points are found by encoding once more with a distinct value and time per point."""
        if (endpoint.path, key) in self._templates:
            return self._templates[(endpoint.path, key)]
        batch = self.real_batch(endpoint, now)
        assert batch is not None
        marked = [replace(s, value=_sentinel(i), timestamp=1.5e9 + i)
                  for i, s in enumerate(batch.samples)]
        payload = encode_metrics([MetricBatch(batch.resource, marked)])
        value_at, time_at, index, fmt = [], [], [], []
        row = self.cluster.topo.index[endpoint.host]
        for i, sample in enumerate(batch.samples):
            value_at.append(_find_once(payload, b"\x21" + struct.pack("<d", _sentinel(i))))
            time_at.append(_find_once(payload, b"\x19" + struct.pack(
                "<Q", round((1.5e9 + i) * 1e9))))
            if sample.name not in ARRAYS:
                raise SystemExit(f"metric {sample.name} has no array here: extend ARRAYS")
            state_key, sample_fmt = ARRAYS[sample.name]
            offset, columns = self.layout[state_key]
            column = sample.labels.get("gpu") or sample.labels.get("device", "mlx5_0")
            index.append(offset + row * columns
                         + (int(column.removeprefix("mlx5_")) if columns > 1 else 0))
            fmt.append(FORMATS.index(sample_fmt))
        made = self._templates[(endpoint.path, key)] = Points(
            bytearray(payload), np.array(value_at), np.array(time_at), np.array(index),
            np.array(fmt))
        return made

    def _plan_for(self, now: float) -> Points:
        key = tuple(self._series_key(e) for e in self.endpoints)
        if self._plan is not None and key == self._plan_key:
            return self._plan
        parts = [(e.host, self._template(e, series, now))
                 for e, series in zip(self.endpoints, key, strict=True) if series is not None]
        ends = np.cumsum([len(p.payload) for _, p in parts]).tolist()
        placed = list(zip([0, *ends], ends, parts, strict=False))  # (start, end, (host, part))
        self._plan = Points(
            bytearray().join(p.payload for _, p in parts),
            np.concatenate([p.value_at + start for start, _, (_, p) in placed]),
            np.concatenate([p.time_at + start for start, _, (_, p) in placed]),
            np.concatenate([p.state_index for _, p in parts]),
            np.concatenate([p.fmt for _, p in parts]),
            tuple((start, end, host) for start, end, (host, _) in placed))
        self._plan_key = key
        return self._plan

    def messages(self, now: float) -> list[Message]:
        plan = self._plan_for(now)
        values = self.state()[plan.state_index]
        for code, fmt in enumerate(FORMATS):
            # Integers below 1e6 print as they are under both formats; the rest are rounded
            # as the exporter's text rounds them (counters in mJ or bytes lose digits there).
            points = np.flatnonzero(plan.fmt == code)
            sub = values[points]
            odd = points[(sub != np.round(sub)) | (np.abs(sub) >= 1e6)]
            values[odd] = [float(format(v, fmt)) for v in values[odd].tolist()]
        view = np.frombuffer(plan.payload, dtype=np.uint8)
        byte = np.arange(1, 9)  # a double or fixed64 follows its one-byte tag
        view[(plan.value_at[:, None] + byte).ravel()] = values.astype("<f8").view(np.uint8)
        view[(plan.time_at[:, None] + byte).ravel()] = np.full(
            len(values), round(now * 1e9), "<u8").view(np.uint8)
        out = [Message(Topic.METRICS, bytes(plan.payload[a:b]), host) for a, b, host in plan.spans]
        storage = [b for b in (self.real_batch(e, now) for e in self.storage) if b is not None]
        out += [Message(Topic.METRICS, encode_metrics([b]), b.resource["host.name"])
                for b in storage]  # a few samples: the real path costs little
        self.samples += len(values) + sum(len(b.samples) for b in storage)
        return out

    def verify(self, node: str, messages: list[Message], now: float) -> None:
        """`node`'s patched payloads must be the real path's bytes."""
        sent = [m.value for m in messages if m.key == node]
        batches = [self.real_batch(e, now) for e in self.endpoints if e.host == node]
        if sent != [encode_metrics([b]) for b in batches if b is not None]:
            raise SystemExit(f"patched payloads of {node} at {now} differ from the scrape path")
        self.verified += 1


def _sentinel(i: int) -> float:
    """A finite double whose bytes hold `i`: each point's value is found by its bytes."""
    return float(struct.unpack("<d", struct.pack("<IHH", i, 0xA55A, 0x4123))[0])


def _find_once(payload: bytes, needle: bytes) -> int:
    at = payload.find(needle)
    if at < 0 or payload.find(needle, at + 1) >= 0:
        raise SystemExit("template point not found exactly once: encode_metrics changed?")
    return at


class Soak:
    """A simulated cluster whose every step is scraped, tailed and run through the stage."""

    def __init__(self, nodes: int, interval_s: float, verify_every: int, root: Path) -> None:
        library = load_library()
        racks = max(1, nodes // 16)
        self.cluster = SimCluster(library, root / "logs", spec=ClusterSpec(
            racks=racks, nodes_per_rack=max(1, nodes // racks), jobs=max(1, nodes // 8),
            seed=7), now=START)
        self.interval_s, self.verify_every = interval_s, verify_every
        self.feed = ScrapeFeed(self.cluster)
        self.bus = MemoryBus()
        self.tail = LogFileCollector(
            self.bus, [TailedFile(path, host, source)
                       for path, host, source in self.cluster.log_files()],
            interval_s, CollectorSettings().max_lines_per_message, from_start=True)
        settings = DetectSettings()
        # A fresh data_dir: the learned detector must not load models from earlier runs.
        self.stage = DetectStage(cast(Bus, self.bus), build_detectors(
            settings.detectors, library, root / "data"), repeat_after_s=settings.repeat_after_s)
        self.now, self.steps = START, 0
        self.metric_messages = self.log_messages = 0

    def advance(self) -> list[Alert]:
        """One interval: step the cluster, scrape, tail, detect; the alerts it raised."""
        self.now += self.interval_s
        self.cluster.step(self.now)
        metrics = self.feed.messages(self.now)
        if self.steps % self.verify_every == 0:  # a different node each time
            nodes = list(self.cluster.nodes)
            self.feed.verify(nodes[self.steps // self.verify_every % len(nodes)], metrics,
                             self.now)
        self.tail.collect(self.now)
        logs, self.bus.logs = self.bus.logs, []
        mark = len(self.bus.alerts)
        self.stage.handle_many(metrics, self.now)  # one poll's batch per topic
        self.stage.handle_many(logs, self.now)
        self.steps += 1
        self.metric_messages += len(metrics)
        self.log_messages += len(logs)
        return self.bus.alerts[mark:]

    def close(self) -> None:
        self.tail.shutdown()
        self.cluster.logs.close()


def soak(args: argparse.Namespace) -> tuple[dict[str, Any], list[Alert]]:
    with tempfile.TemporaryDirectory(prefix="vigil-soak-") as tmp:
        run = Soak(args.nodes, args.interval, args.verify_every, Path(tmp))
        steps = round(args.hours * 3600 / args.interval)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for step in range(1, steps + 1):
            run.advance()
            if step % round(3600 / args.interval) == 0:  # progress, once a simulated hour
                print(f"soak: {step * args.interval / 3600:.0f}/{args.hours:g} h, "
                      f"{len(run.bus.alerts)} alerts, {time.perf_counter() - wall0:.0f} s",
                      file=sys.stderr, flush=True)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        run.close()
    alerts = run.bus.alerts
    node_hours = len(run.cluster.nodes) * steps * args.interval / 3600
    by_detector = Counter(a.detector for a in alerts)
    figures: dict[str, Any] = {
        "nodes": len(run.cluster.nodes), "hours": args.hours, "interval_s": args.interval,
        "steps": steps, "node_hours": round(node_hours, 1), "soak_alerts": len(alerts),
        "false_alerts_per_1000_node_hours": round(1000 * len(alerts) / node_hours, 3),
        **{f"soak_alerts_{name}": by_detector[name] for name in DetectSettings().detectors},
        "soak_alerts_by_fault": ",".join(
            f"{fault}={n}" for fault, n in Counter(a.fault_id for a in alerts).most_common()),
        "soak_samples": run.feed.samples, "soak_log_lines": run.bus.log_lines,
        "soak_metric_messages": run.metric_messages, "soak_log_messages": run.log_messages,
        "soak_dead_letters": len(run.bus.dead_letters),
        "soak_payloads_verified": run.feed.verified,
        "soak_cpu_s": round(cpu, 1), "soak_wall_s": round(wall, 1),
        "soak_samples_per_cpu_s": round(run.feed.samples / cpu),
        "soak_sim_to_wall": round(steps * args.interval / wall, 1),
    }
    return figures, alerts


def time_to_alert(args: argparse.Namespace, name: str, fault_id: str,
                  pick: Callable[[SimCluster], str]) -> dict[str, Any]:
    """Warm up healthy, inject `fault_id` at `pick(cluster)`, wait up to FAULT_WINDOW_S for an
    alert naming the fault or pointing at a node the fault slowed (the sim's ground truth)."""
    with tempfile.TemporaryDirectory(prefix="vigil-soak-") as tmp:
        run = Soak(args.nodes, args.interval, args.verify_every, Path(tmp))
        while run.now < START + args.warmup:
            run.advance()
        before = len(run.bus.alerts)
        target = pick(run.cluster)
        injected = run.cluster.inject(fault_id, target, run.now + args.interval,
                                      duration_s=2 * FAULT_WINDOW_S)
        assert injected.truth is not None
        nodes = set(injected.truth.nodes)
        hits: list[tuple[float, Alert]] = []  # (seconds after the injection, alert)
        while (run.now < injected.injected_at + FAULT_WINDOW_S
               and not any(a.fault_id == fault_id for _, a in hits)):
            hits += [(run.now - injected.injected_at, a) for a in run.advance()]
        run.close()
    ours = [(t, a) for t, a in hits if a.fault_id == fault_id or a.node in nodes]
    named = [t for t, a in hits if a.fault_id == fault_id]
    return {
        f"{name}_target": target, f"{name}_nodes": ",".join(sorted(nodes)),
        f"{name}_warmup_alerts": before,
        f"time_to_{name}_alert_s": ours[0][0] if ours else None,
        f"time_to_{name}_named_s": named[0] if named else None,
        f"{name}_first_alert": _describe(ours[0][1]) if ours else None,
        f"{name}_alert_entities": ";".join(_describe(a) for _, a in hits),
    }


def _describe(alert: Alert) -> str:
    return f"{alert.fault_id}@{alert.entity}({alert.detector})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64, help="in jobs of 8 nodes")
    parser.add_argument("--hours", type=float, default=16.0, help="simulated hours of soak")
    parser.add_argument("--interval", type=float, default=10.0, help="simulated s a step")
    parser.add_argument("--warmup", type=float, default=1800.0, help="healthy s before a fault")
    parser.add_argument("--verify-every", type=int, default=60, help="steps between checks")
    parser.add_argument("--show-alerts", type=int, default=5, help="soak alerts to describe")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    figures, alerts = soak(args)
    straggler = time_to_alert(args, "straggler", "job.straggler", lambda c: c.topo.jobs[0].id)
    thermal = time_to_alert(args, "thermal", "gpu.thermal_throttle",
                            lambda c: f"gpu:{c.topo.jobs[-1].nodes[2]}/3")
    for alert in alerts[:args.show_alerts]:
        print(f"soak alert t+{alert.detected_at - START:.0f}s {_describe(alert)}: "
              f"{alert.summary} {alert.evidence}", file=sys.stderr)
    print_figures({**figures, **straggler, **thermal}, args.json)


if __name__ == "__main__":
    main()
