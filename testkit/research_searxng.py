"""A local SearXNG stand-in: ``GET /search?q=...&format=json`` and the pages its results link to.

Results point back at this server (``/page/<n>``), so gpt-researcher's scraper stays on 127.0.0.1.
Every query is recorded in ``queries``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from testkit.serving import serving

PAGES = {
    1: ("Qdrant payload indexes", "Payload indexes make filtered vector search fast in Qdrant collections."),
    2: ("Prefect work pools", "A Prefect work pool routes flow runs to the workers that poll it."),
    3: ("vLLM continuous batching", "vLLM schedules requests with continuous batching to keep the GPU busy."),
}


@dataclass
class FakeSearxState:
    url: str = ""
    queries: list[str] = field(default_factory=list)
    fail: bool = False


def _handler(state: FakeSearxState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, data: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            if parsed.path == "/search":
                qs = parse_qs(parsed.query)
                state.queries.append(qs.get("q", [""])[0])
                if state.fail or qs.get("format") != ["json"]:
                    self._send(403 if not state.fail else 500, b"{}", "application/json")
                    return
                results = [
                    {"url": f"{state.url}/page/{n}", "title": title, "content": text, "engine": "fake"}
                    for n, (title, text) in PAGES.items()
                ]
                body = {"query": qs.get("q", [""])[0], "number_of_results": len(results), "results": results}
                self._send(200, json.dumps(body).encode(), "application/json")
            elif parsed.path.startswith("/page/"):
                n = int(parsed.path.rsplit("/", 1)[1])
                title, text = PAGES.get(n, ("missing", "no such page"))
                paragraphs = "".join(f"<p>{text} Paragraph {i} adds detail about {title}.</p>" for i in range(8))
                head = f"<head><title>{title}</title></head>"
                html = f"<html>{head}<body><h1>{title}</h1>{paragraphs}</body></html>"
                self._send(200, html.encode(), "text/html; charset=utf-8")
            else:
                self._send(404, b"not found", "text/plain")

    return Handler


@contextmanager
def run_fake_searxng() -> Iterator[FakeSearxState]:
    state = FakeSearxState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    with serving(server) as url:
        state.url = url
        yield state
