"""`vigil up`: starts every part of Vigil on one machine, in order, and stops them in reverse."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml
from vigil.collectors.spool import SpoolingPublisher
from vigil.collectors.spool_config import SpoolConfig
from vigil.diagnosis.correlate import Correlator
from vigil.diagnosis.detect import DetectStage
from vigil.diagnosis.incidents import IncidentStage
from vigil.diagnosis.inventory_stage import InventoryStage, LiveTopology
from vigil.diagnosis.library import load_library
from vigil.diagnosis.registry import build_detectors
from vigil.sim.clock import SimClock
from vigil.sim.cluster import SimCluster
from vigil.sim.inventory_export import to_inventory
from vigil.sim.server import SimServer
from vigil.sim.topology import ClusterSpec
from vigil.topology.inventory import load_inventory
from vigil.ui.collector_set import build_collectors
from vigil.ui.runstate import RunState, clear_state

from vigil import telemetry
from vigil.broker import EmbeddedBroker, free_port
from vigil.bus import Bus
from vigil.children import die_with_parent
from vigil.settings import Settings
from vigil.stage import ConsumerStage
from vigil.store import Store

log = logging.getLogger(__name__)

CONSOLE_APP = Path(__file__).with_name("console.py")
TOPOLOGY_FILE = "topology.pickle"


class Component(Protocol):
    def start(self) -> None: ...

    def shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One start-up step as shown to the user: what it was and how long it took."""

    name: str
    detail: str
    seconds: float


class ConsoleProcess:
    """The Streamlit console as a child process."""

    def __init__(self, settings: Settings, log_file: Path) -> None:
        self.host = settings.console.host
        self.port = settings.console.port or free_port(self.host)
        self.settings = settings
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        env = dict(os.environ, VIGIL_DB_URL=self.settings.database_url,
                   VIGIL_DATA_DIR=str(self.settings.data_dir.resolve()))
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(CONSOLE_APP),
                 "--server.headless", "true", "--server.address", self.host,
                 "--server.port", str(self.port), "--browser.gatherUsageStats", "false",
                 "--server.fileWatcherType", "none"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        _wait_http(f"{self.url}/_stcore/health", timeout_s=60, process=self._process,
                   what=f"console (see {self.log_file})")

    def shutdown(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


class Runtime:
    """Everything `vigil up` runs. `start()` reports each step through `on_step`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.broker: EmbeddedBroker | None = None
        self.bus: Bus | None = None
        self.store: Store | None = None
        self.sim: SimServer | None = None
        self.console: ConsoleProcess | None = None
        self.metrics_url: str | None = None
        self.stages: list[ConsumerStage] = []
        self.live = LiveTopology()
        self._started: list[Component] = []
        self.started_at = time.time()

    def start(self, on_step: Callable[[Step], None] = lambda step: None) -> RunState:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)

        def step(name: str, action: Callable[[], str]) -> None:
            t0 = time.monotonic()
            detail = action()
            on_step(Step(name, detail, time.monotonic() - t0))

        step("telemetry", self._start_telemetry)
        step("kafka", self._start_kafka)
        step("store", self._open_store)
        if "sim" in s.collectors.enabled:
            step("simulated cluster", self._start_sim)
        step("pipeline", self._start_pipeline)
        step("collectors", self._start_collectors)
        if s.console.enabled:
            step("console", self._start_console)
        state = self._state(ready_at=time.time())
        state.write(self.data_dir)
        return state

    def shutdown(self) -> None:
        """Stop everything started, newest first; safe after a partial start."""
        for component in reversed(self._started):
            try:
                component.shutdown()
            except Exception:
                log.exception("shutdown failed", extra={"component": type(component).__name__})
        self._started.clear()
        if self.bus is not None:
            self.bus.close()
        if self.store is not None:
            self.store.close()
        if self.broker is not None:
            self.broker.shutdown()
        telemetry.shutdown()
        clear_state(self.data_dir)

    @property
    def topology_file(self) -> Path:
        """The live graph, saved now and then for `vigil topo` and post-mortems."""
        return self.data_dir / TOPOLOGY_FILE

    # --- steps ---------------------------------------------------------------------------
    def _start_telemetry(self) -> str:
        t = self.settings.telemetry
        if not t.enabled:
            return "off"
        port = telemetry.start(t.host, t.port)
        self.metrics_url = f"http://{t.host}:{port}/metrics"
        return self.metrics_url

    def _start_kafka(self) -> str:
        bootstrap = self.settings.kafka.bootstrap
        if bootstrap is None:
            self.broker = EmbeddedBroker(self.data_dir / "tansu.log")
            self.broker.start()
            bootstrap = self.broker.bootstrap
        self.bus = Bus(bootstrap, self.settings.kafka)
        self.bus.ensure_topics()
        kind = "embedded Tansu" if self.broker else "external"
        return f"{kind} broker at {bootstrap}"

    def _open_store(self) -> str:
        self.store = Store.open(self.settings.database_url)
        return _redact(self.settings.database_url)

    def _start_sim(self) -> str:
        s = self.settings.sim
        spec = ClusterSpec(racks=s.racks, nodes_per_rack=s.nodes // s.racks,
                           gpus_per_node=s.gpus_per_node, jobs=s.jobs, seed=s.seed)
        clock = SimClock(speed=s.speed)
        cluster = SimCluster(load_library(), self.data_dir / "sim", spec=spec, now=clock.now(),
                             log_interval_s=max(s.interval_s, 10.0))
        self.sim = SimServer(cluster, s.host, s.port, s.interval_s, clock)
        self._launch(self.sim)
        inventory = self.data_dir / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(to_inventory(cluster.topo), sort_keys=False))
        # The graph starts as the inventory describes it; vigil.inventory keeps it current.
        self.live = LiveTopology(load_inventory(inventory, at=clock.now()))
        self.live.topo.save(self.topology_file)
        speed = f", {s.speed:g}x real time" if s.speed != 1 else ""
        return (f"{s.nodes} nodes x {s.gpus_per_node} GPUs, {len(cluster.topo.jobs)} job(s) "
                f"at {self.sim.url}{speed}")

    def _start_pipeline(self) -> str:
        assert self.bus is not None and self.store is not None
        library = load_library()
        detectors = build_detectors(self.settings.detect.detectors, library, self.data_dir)
        correlator = Correlator(library, self.settings.correlate.window_s)
        self.stages = [
            DetectStage(self.bus, detectors,
                        repeat_after_s=self.settings.detect.repeat_after_s),
            IncidentStage(self.bus, self.store, correlator),
            InventoryStage(self.bus, self.live, save_to=self.topology_file),
        ]
        for stage in self.stages:
            self._launch(stage)
        deadline = time.monotonic() + 60
        for stage in self.stages:
            if not stage.ready.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"stage {stage.name} did not join its consumer group in 60 s")
        return (f"{len(detectors)} detector(s): {', '.join(d.name for d in detectors)}; "
                "incidents; topology")

    def _start_collectors(self) -> str:
        assert self.bus is not None
        c = self.settings.collectors
        spool = SpoolingPublisher.for_bus(self.bus, self.data_dir / "spool", SpoolConfig(
            max_memory_bytes=c.spool_max_memory_bytes, max_disk_bytes=c.spool_max_disk_bytes))
        self._launch(spool)  # first started, so the collectors stop before it does
        collectors = build_collectors(c, spool, self.data_dir, self.sim)
        for collector in collectors:
            self._launch(collector)
        return ", ".join(collector.name for collector in collectors) or "none"

    def _start_console(self) -> str:
        self.console = ConsoleProcess(self.settings, self.data_dir / "console.log")
        self._launch(self.console)
        return self.console.url

    def _launch(self, component: Component) -> None:
        self._started.append(component)  # before start(): a failed start is still shut down
        component.start()

    def _state(self, ready_at: float | None) -> RunState:
        assert self.bus is not None
        return RunState(
            pid=os.getpid(), bootstrap=self.bus.bootstrap, embedded_broker=self.broker is not None,
            db_url=self.settings.database_url, sim_url=self.sim.url if self.sim else None,
            console_url=self.console.url if self.console else None,
            metrics_url=self.metrics_url, started_at=self.started_at, ready_at=ready_at,
            components=[type(c).__name__ for c in self._started],
            child_pids=[pid for pid in (self.broker and self.broker.pid,
                                        self.console and self.console.pid) if pid],
        )


def _redact(url: str) -> str:
    """A database URL without its password, for display."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':')[0]}:***@{tail}"


def _wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout_s:.0f} s")
