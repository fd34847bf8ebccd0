"""Serves the simulated cluster the way real sources are served, and takes fault injections.

GET  /nodes/NODE/metrics   Prometheus exposition of NODE's GPUs (like dcgm-exporter's /metrics)
GET  /targets              every node with its metrics path and log files (a discovery file)
GET  /faults               the fault modes that can be injected, and the valid targets
POST /inject               {"fault": ID, "target": ENTITY} -> 200 with the injection, 4xx if bad
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vigil.sim.cluster import InjectError, SimCluster

log = logging.getLogger(__name__)


class SimServer:
    """The HTTP face of a SimCluster plus the thread that advances its clock."""

    def __init__(self, cluster: SimCluster, host: str, port: int, interval_s: float) -> None:
        self.cluster = cluster
        self.interval_s = interval_s
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(cluster))
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
        while not self._stop.wait(self.interval_s):
            self.cluster.step(time.time())


def _handler_for(cluster: SimCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("sim http " + format, *args)

        def do_GET(self) -> None:
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) == 3 and parts[0] == "nodes" and parts[2] == "metrics":
                if parts[1] not in cluster.nodes:
                    self._send_json(404, {"error": f"no node {parts[1]!r}"})
                    return
                body = cluster.exposition(parts[1]).encode()
                self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
            elif parts == ["targets"]:
                self._send_json(200, {"nodes": [
                    {"node": n.name, "metrics_path": f"/nodes/{n.name}/metrics",
                     "logs": {"kernel": str(n.kernel_log)}}
                    for n in cluster.nodes.values()]})
            elif parts == ["faults"]:
                self._send_json(200, {
                    "faults": [{"id": m.id, "title": m.title, "component": m.component}
                               for m in cluster.injectable()],
                    "targets": cluster.entities()})
            else:
                self._send_json(404, {"error": f"no such path {self.path!r}"})

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
            try:
                injection = cluster.inject(body["fault"], body["target"], time.time())
            except InjectError as exc:
                self._send_json(422, {"error": str(exc)})
                return
            log.info("fault injected", extra={"fault": injection.fault_id,
                                              "target": injection.target})
            self._send_json(200, asdict(injection))

        def _send_json(self, status: int, data: object) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
