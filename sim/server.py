"""Serves the simulated cluster the way real sources are served, and takes fault injections.

GET  /nodes/NODE/metrics                NODE's GPUs, as dcgm-exporter serves them
GET  /nodes/NODE/node-exporter/metrics  NODE's host and InfiniBand ports, as node-exporter does
GET  /nodes/NODE/trainer/metrics        the training job's metrics on NODE (404: no job there)
GET  /storage/SYSTEM/metrics            a shared storage system's exporter
GET  /events?since=SEQ     cluster events after SEQ, one JSON object a line (a watch, polled)
GET  /targets              every endpoint and log file (a discovery file)
An unreachable node (a fault) answers 503 on all its endpoints, as a dead host times out.
GET  /faults               the fault modes that can be injected, and the valid targets
POST /inject               {"fault": ID, "target": ENTITY} -> 200 with the injection, 4xx if bad
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vigil.sim.clock import SimClock
from vigil.sim.cluster import InjectError, SimCluster
from vigil.sim.effects import target_kind

log = logging.getLogger(__name__)


class SimServer:
    """The HTTP face of a SimCluster plus the thread that advances its clock."""

    def __init__(
        self, cluster: SimCluster, host: str, port: int, interval_s: float,
        clock: SimClock | None = None,
    ) -> None:
        self.cluster = cluster
        self.interval_s = interval_s  # simulated seconds between steps
        self.clock = clock or SimClock()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(cluster, self.clock))
        self._httpd.daemon_threads = True
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._httpd.serve_forever, name="sim-http", daemon=True),
            threading.Thread(target=self._tick, name="sim-clock", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._threads:
            self._httpd.shutdown()
        self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def _tick(self) -> None:
        while not self._stop.wait(self.clock.wall_seconds(self.interval_s)):
            self.cluster.step(self.clock.now())


def _handler_for(cluster: SimCluster, clock: SimClock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("sim http " + format, *args)

        def do_GET(self) -> None:
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) >= 3 and parts[0] == "nodes" and parts[-1] == "metrics":
                self._node_metrics(parts[1], "/".join(parts[2:-1]))
            elif len(parts) == 3 and parts[0] == "storage" and parts[2] == "metrics":
                if parts[1] not in cluster.topo.storage:
                    self._send_json(404, {"error": f"no storage system {parts[1]!r}"})
                    return
                self._send_text(cluster.storage(parts[1]))
            elif parts == ["events"]:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                try:
                    since = int(query.get("since", ["0"])[0])
                except ValueError:
                    self._send_json(400, {"error": "query parameter 'since' must be an integer"})
                    return
                lines = "".join(json.dumps(asdict(e)) + "\n" for e in cluster.events.since(since))
                self._send(200, lines.encode(), "application/x-ndjson")
            elif parts == ["targets"]:
                self._send_json(200, _targets(cluster))
            elif parts == ["faults"]:
                self._send_json(200, {
                    "faults": [{"id": m.id, "title": m.title, "layer": m.layer,
                                "component": m.component, "target": target_kind(m)}
                               for m in cluster.injectable()],
                    "targets": cluster.entities()})
            else:
                self._send_json(404, {"error": f"no such path {self.path!r}"})

        def _node_metrics(self, node: str, exporter: str) -> None:
            if node not in cluster.nodes:
                self._send_json(404, {"error": f"no node {node!r}"})
            elif cluster.unreachable(node):
                self._send_json(503, {"error": f"{node} does not answer"})
            elif exporter == "":
                self._send_text(cluster.exposition(node))
            elif exporter == "node-exporter":
                self._send_text(cluster.node_exporter(node))
            elif exporter == "trainer":
                text = cluster.trainer(node)
                if text is None:
                    self._send_json(404, {"error": f"no training process on {node}"})
                else:
                    self._send_text(text)
            else:
                self._send_json(404, {"error": f"no exporter {exporter!r}"})

        def _send_text(self, text: str) -> None:
            self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

        def do_POST(self) -> None:
            if self.path != "/inject":
                self._send_json(404, {"error": f"no such path {self.path!r}"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
            except (ValueError, json.JSONDecodeError) as exc:
                self._send_json(400, {"error": f"body is not JSON: {exc}"})
                return
            for name in ("fault", "target"):
                if not isinstance(body, dict) or not isinstance(body.get(name), str):
                    self._send_json(422, {"error": f"field {name!r} is required (a string)"})
                    return
            duration = body.get("duration_s", 3600.0)
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) \
                    or duration <= 0:
                self._send_json(422, {"error": "field 'duration_s' must be a positive number"})
                return
            try:
                injection = cluster.inject(body["fault"], body["target"], clock.now(),
                                           float(duration))
            except InjectError as exc:
                self._send_json(422, {"error": str(exc)})
                return
            log.info("fault injected", extra={"fault": injection.fault_id,
                                              "target": injection.target})
            self._send_json(200, {k: v for k, v in asdict(injection).items() if k != "truth"})

        def _send_json(self, status: int, data: object) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _targets(cluster: SimCluster) -> dict[str, object]:
    """Every endpoint to scrape and log file to tail, like a Prometheus file_sd + a log list."""
    exporters: dict[str, dict[str, str]] = {}
    for endpoint in cluster.endpoints():
        exporters.setdefault(endpoint.host, {})[endpoint.exporter] = endpoint.path
    nodes = [{"node": name, "metrics_path": exporters[name]["dcgm"],
              "exporters": exporters[name],
              "logs": {"kernel": str(view.kernel_log), "training": str(view.training_log)}}
             for name, view in cluster.nodes.items()]
    return {
        "nodes": nodes,
        "storage": [{"system": s, "metrics_path": exporters[s]["storage"]}
                    for s in cluster.topo.storage],
        "logs": [{"path": str(p), "host": h, "source": src} for p, h, src in cluster.log_files()],
    }
