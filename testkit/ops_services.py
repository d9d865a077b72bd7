"""Local HTTP servers on 127.0.0.1 that answer like the cluster's services (health endpoints only).

Each fake is a real HTTP server, so the probes run through httpx exactly as against the real thing.
A route maps a path (GET) or ``"METHOD /path"`` to (status code, body: JSON value, text or bytes);
``delay_s`` makes every answer hang that long; ``requests`` lists what was asked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testkit.serving import serving

Routes = Mapping[str, tuple[int, Any]]

HEALTHY: dict[str, Routes] = {
    "qdrant": {
        "/readyz": (200, "all shards are ready"),
        "/collections": (200, {"result": {"collections": [{"name": "docs"}]}, "status": "ok"}),
        "/collections/docs": (200, {"result": {"status": "green", "points_count": 3}, "status": "ok"}),
    },
    "vllm": {"/health": (200, ""), "/v1/models": (200, {"object": "list", "data": [{"id": "qwen3-8b"}]})},
    "litellm": {
        "/health/liveliness": (200, "I'm alive!"),
        "/health/readiness": (200, {"status": "healthy", "db": "connected", "cache": None}),
    },
    "openwebui": {"/health": (200, {"status": True})},
    "prometheus": {"/-/ready": (200, "Prometheus Server is Ready.")},
    "alertmanager": {"/-/ready": (200, "OK")},
    "grafana": {"/api/health": (200, {"commit": "abc", "database": "ok", "version": "11.2.0"})},
    "searxng": {"/healthz": (200, "OK")},
    "haproxy": {"/healthz": (200, "<html><body><h1>200 OK</h1></body></html>")},
    "vault": {"/v1/sys/health": (200, {"initialized": True, "sealed": False, "standby": False})},
    "consul": {"/v1/status/leader": (200, '"10.0.0.1:8300"')},  # a JSON string, as Consul sends
    "prefect": {"/api/health": (200, True)},
}


class _Handler(BaseHTTPRequestHandler):
    server: _FakeServer

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # uploads are read and dropped
        path = self.path.split("?", 1)[0]
        self.server.requests.append((method, path, length))
        self.server.headers_seen.append(dict(self.headers))
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        routes = self.server.routes
        found = routes.get(f"{method} {path}") or (routes.get(path) if method == "GET" else None)
        code, body = found or (404, {"error": "not found"})
        if isinstance(body, bytes):
            raw, ctype = body, "application/octet-stream"
        elif isinstance(body, str):
            raw, ctype = body.encode(), "text/plain"
        else:
            raw, ctype = json.dumps(body).encode(), "application/json"
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the probe gave up (timeout): nothing to answer

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def log_message(self, *_args: Any) -> None:
        pass


class _FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: Routes, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = dict(routes)
        self.delay_s = delay_s
        self.requests: list[tuple[str, str, int]] = []
        self.headers_seen: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def fake_service(routes: Routes, delay_s: float = 0.0) -> Iterator[_FakeServer]:
    server = _FakeServer(routes, delay_s)
    with serving(server):
        yield server


@contextmanager
def fake_cluster(
    overrides: Mapping[str, Routes] | None = None, delays: Mapping[str, float] | None = None
) -> Iterator[dict[str, str]]:
    """One fake per HTTP kind; yields kind -> base URL."""
    servers = []
    try:
        urls = {}
        for kind, routes in HEALTHY.items():
            merged = {**routes, **((overrides or {}).get(kind, {}))}
            cm = fake_service(merged, (delays or {}).get(kind, 0.0))
            servers.append(cm)
            urls[kind] = cm.__enter__().url
        yield urls
    finally:
        for cm in reversed(servers):
            cm.__exit__(None, None, None)
