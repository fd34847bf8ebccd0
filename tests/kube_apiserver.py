"""A stand-in for a real kube-apiserver, which cannot be installed here, for tests of the
Kubernetes loader, collector and recovery executors.

It speaks only the few calls of the core/v1 REST API that Vigil makes, with the official
client's wire shapes: list nodes, pods (all or one namespace) and events (all or one
namespace) with ``limit``/``continue`` pagination; get, patch (JSON merge patch, which it
also applies for strategic-merge patches: lists are replaced whole) and the pod calls a
recovery needs (eviction, delete). Anything else is answered 404, and list options it
does not implement (selectors, ``watch``) 400, so a test cannot pass on semantics the
stand-in lacks. Every request is recorded for tests to assert on.

State is plain dicts of JSON objects that a test fills (`put_node`, `put_pod`, `put_event`
stamp names, uids and resourceVersions) and changes between polls. Connect the official
client with `configuration()` or `core_api()`: plain HTTP on 127.0.0.1 and a fake bearer
token, which the stand-in checks.

Import it as ``from kube_apiserver import KubeApiServer``: pytest puts ``tests/`` (the
folder of the root conftest.py, not a package) on ``sys.path`` in its default import mode.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kubernetes import client

TOKEN = "stand-in-token"
JsonObject = dict[str, Any]
_MERGE_TYPES = frozenset({"application/merge-patch+json",
                          "application/strategic-merge-patch+json"})
_LIST_OPTIONS = frozenset({"limit", "continue"})


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the stand-in received it; `body` is its parsed JSON, if it had one."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str


class ApiError(Exception):
    """Answered as a Kubernetes ``Status`` object with this code and reason."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class KubeApiServer:
    """The stand-in: start it, fill `nodes`/`pods`/`events`, point the client at `url`."""

    def __init__(self) -> None:
        self.nodes: dict[str, JsonObject] = {}
        self.pods: dict[tuple[str, str], JsonObject] = {}  # (namespace, name) -> Pod
        self.events: dict[tuple[str, str], JsonObject] = {}
        self.requests: list[Request] = []
        # Set to answer every request with this HTTP status (an API server in trouble).
        self.fail_with: int | None = None
        # Pods whose eviction a PodDisruptionBudget would refuse (429, as the API does).
        self.eviction_blocked: set[tuple[str, str]] = set()
        # Called with each request before it is served (under the lock): a test's way to
        # change the cluster in the middle of a paginated list.
        self.on_request: Callable[[Request], None] | None = None
        self.lock = threading.RLock()
        self._versions = itertools.count(1000)
        self._pages: dict[str, list[JsonObject]] = {}  # continue token -> the rest of a list
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeApiServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="kube-apiserver-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def configuration(self) -> client.Configuration:
        """A client configuration for this server: no TLS, the stand-in's bearer token, no
        proxy from the environment, and no retries, so a test of a failing server does not
        wait out urllib3's."""
        config = client.Configuration(host=self.url, api_key={"authorization": TOKEN},
                                      api_key_prefix={"authorization": "Bearer"}, no_proxy="*")
        config.retries = False
        return config

    def core_api(self) -> client.CoreV1Api:
        return client.CoreV1Api(client.ApiClient(self.configuration()))

    # --- state -------------------------------------------------------------------------------
    def put_node(self, node: JsonObject) -> JsonObject:
        """Store (or replace) a Node; a new resourceVersion, a uid if it has none."""
        with self.lock:
            stored = self._stamp(node)
            self.nodes[stored["metadata"]["name"]] = stored
            return stored

    def put_pod(self, pod: JsonObject) -> JsonObject:
        with self.lock:
            stored = self._stamp(pod, namespaced=True)
            meta = stored["metadata"]
            self.pods[(meta["namespace"], meta["name"])] = stored
            return stored

    def put_event(self, event: JsonObject) -> JsonObject:
        with self.lock:
            stored = self._stamp(event, namespaced=True)
            meta = stored["metadata"]
            self.events[(meta["namespace"], meta["name"])] = stored
            return stored

    def expire_continue_tokens(self) -> None:
        """Forget every continue token, as etcd compaction does: their use is answered 410."""
        with self.lock:
            self._pages.clear()

    def requests_to(self, method: str, path_prefix: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests
                    if r.method == method and r.path.startswith(path_prefix)]

    def _stamp(self, obj: JsonObject, namespaced: bool = False) -> JsonObject:
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        if not isinstance(meta.get("name"), str):
            raise ValueError(f"object without metadata.name: {obj!r}")
        if namespaced:
            meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        return stored

    # --- the API -----------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], body: Any,
               content_type: str) -> tuple[int, JsonObject]:
        with self.lock:
            request = Request(method, path, query, body, content_type)
            self.requests.append(request)
            if self.on_request is not None:
                self.on_request(request)
            if self.fail_with is not None:
                raise ApiError(self.fail_with, "InternalError", "the stand-in is told to fail")
            route = _route(path)
            if route is None:
                raise ApiError(404, "NotFound", f"the stand-in does not serve {path}")
            resource, namespace, name, sub = route
            if name is None:
                if method != "GET":
                    raise ApiError(405, "MethodNotAllowed", f"{method} {path}")
                return 200, self._list(resource, namespace, query)
            return self._one(method, resource, namespace or "", name, sub, body, content_type)

    def _list(self, resource: str, namespace: str | None, query: dict[str, str]) -> JsonObject:
        unknown = set(query) - _LIST_OPTIONS
        if unknown:
            raise ApiError(400, "BadRequest",
                           f"the stand-in implements no {', '.join(sorted(unknown))}")
        token = query.get("continue")
        if token:
            if token not in self._pages:
                raise ApiError(410, "Expired", "The provided continue parameter is too old")
            items = self._pages.pop(token)
        else:
            store = self._store(resource)
            items = [copy.deepcopy(obj) for key, obj in sorted(store.items(), key=_sort_key)
                     if namespace is None or obj["metadata"].get("namespace") == namespace]
        limit = int(query.get("limit") or 0)
        meta: JsonObject = {"resourceVersion": str(next(self._versions))}
        if 0 < limit < len(items):
            next_token = uuid.uuid4().hex
            self._pages[next_token] = items[limit:]
            items = items[:limit]
            meta["continue"] = next_token
        kind = {"nodes": "NodeList", "pods": "PodList", "events": "EventList"}[resource]
        return {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items}

    def _one(self, method: str, resource: str, namespace: str, name: str, sub: str | None,
             body: Any, content_type: str) -> tuple[int, JsonObject]:
        store = self._store(resource)
        key: Any = name if resource == "nodes" else (namespace, name)
        current = store.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f'{resource} "{name}" not found')
        if sub == "eviction" and method == "POST" and resource == "pods":
            if key in self.eviction_blocked:
                raise ApiError(429, "TooManyRequests",
                               "Cannot evict pod as it would violate the pod's disruption budget.")
            del store[key]
            return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                         "metadata": {}, "code": 201}
        if sub is not None:
            raise ApiError(404, "NotFound", f"the stand-in does not serve {resource}/{sub}")
        if method == "GET":
            return 200, copy.deepcopy(current)
        if method == "DELETE":
            del store[key]
            return 200, copy.deepcopy(current)
        if method == "PATCH":
            if content_type not in _MERGE_TYPES:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the stand-in applies merge patches only, not {content_type}")
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            patched = _merge_patch(copy.deepcopy(current), body)
            patched["metadata"]["resourceVersion"] = str(next(self._versions))
            store[key] = patched
            return 200, copy.deepcopy(patched)
        raise ApiError(405, "MethodNotAllowed", f"{method} on {resource}/{name}")

    def _store(self, resource: str) -> dict[Any, JsonObject]:
        stores: dict[str, dict[Any, JsonObject]] = {
            "nodes": self.nodes, "pods": self.pods, "events": self.events}
        return stores[resource]


def _sort_key(item: tuple[Any, JsonObject]) -> str:
    return json.dumps(item[0])


def _route(path: str) -> tuple[str, str | None, str | None, str | None] | None:
    """(resource, namespace, name, subresource) of a core/v1 path this stand-in serves."""
    parts = [unquote(part) for part in path.strip("/").split("/")]
    if parts[:2] != ["api", "v1"]:
        return None
    rest, namespace = parts[2:], None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in ("nodes", "pods", "events") or len(rest) > 3:
        return None
    if rest[0] == "nodes" and namespace is not None:
        return None
    if len(rest) > 1 and rest[0] != "nodes" and namespace is None:
        return None  # a pod or event is named within its namespace
    name = rest[1] if len(rest) > 1 else None
    return rest[0], namespace, name, rest[2] if len(rest) > 2 else None


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged


def _handler_for(server: KubeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def _serve(self) -> None:
            split = urlsplit(self.path)
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            try:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    raise ApiError(401, "Unauthorized", "no or wrong bearer token")
                body = json.loads(raw) if raw else None
                code, answer = server.handle(self.command, split.path, query, body,
                                             content_type)
            except ApiError as exc:
                code, answer = exc.code, _status(exc)
            except json.JSONDecodeError as exc:
                code, answer = 400, _status(ApiError(400, "BadRequest", f"not JSON: {exc}"))
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    return Handler


def _status(error: ApiError) -> JsonObject:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": error.message, "reason": error.reason, "code": error.code}


def running() -> Iterator[KubeApiServer]:
    """A started stand-in, stopped afterwards: the body of a pytest fixture."""
    with KubeApiServer() as server:
        yield server
