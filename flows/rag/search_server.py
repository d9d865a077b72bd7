"""The warm search path: ``swarm search-server`` keeps the embedding model and the store open in one process and
answers the node's searches over HTTP on loopback, so a reader's search costs one embedding and one lookup
instead of seconds of imports and model loading. Readers use it where ``search_server`` names it
(flows/rag/search.py); it runs the same search they would (``search_with``).

Protocol, JSON both ways:

- ``POST /search`` ``{"store": <store_identity>, "queries": [...], "k": n, "must": [[field, [values]]],
  "mode": "dense" | "hybrid" | null}`` -> 200 ``{"mode": ..., "hits": [[{"id", "score", "payload"}]]}``;
  409 when the client's settings name another store than the server holds; 400 ``{"error": one line}`` for a
  request or search the store refuses (the ConfigError the reader would get in its own process); 503 when the
  store cannot be opened (an ingest holds the embedded one).
- ``GET /health`` -> ``{"store": ..., "model": ...}``.

The embedded store (Qdrant Edge) admits one process: the server holds it while searches come and releases it
``idle_release_s`` after the last one, so an ingest can open it; the next search opens it again.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx

from flows.common.errors import ConfigError, SwarmError
from flows.common.process_cache import ProcessCache
from flows.rag.config import RagConfig
from flows.rag.search import Searched, search_with, store_identity
from flows.rag.store import SEARCH_MODES, Hit, Must

if TYPE_CHECKING:
    from flows.rag.resources import RagResources

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
MAX_QUERIES = 1000
MAX_BODY_BYTES = 4 << 20


def _client(base: str) -> httpx.Client:
    # Connecting is instant on loopback or refused; a first search after an idle release opens the store. One
    # client per process and server: a new one per search cost 36 ms (its TLS context), more than the search.
    return httpx.Client(base_url=base, timeout=httpx.Timeout(120.0, connect=2.0), trust_env=False)


_clients: ProcessCache[str, httpx.Client] = ProcessCache(httpx.Client.close)


class ServerUnavailable(Exception):
    """The warm server did not answer this search (down, another store, a failure): search in this process."""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def ask_server(config: RagConfig, queries: Sequence[str], k: int, must: Must = ()) -> Searched:
    """``search_chunks`` through the server at ``config.search_server``."""
    body = {
        "store": store_identity(config),
        "queries": list(queries),
        "k": k,
        "must": [[field, list(values)] for field, values in must],
        "mode": config.search_mode if "search_mode" in config.explicit else None,
    }
    base = str(config.search_server).rstrip("/")
    try:
        resp = _clients.get_or_open(base, lambda: _client(base)).post("/search", json=body)
    except httpx.HTTPError as exc:
        raise ServerUnavailable(_one_line(str(exc)) or type(exc).__name__) from None
    try:
        answer = resp.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if resp.status_code == 400:
        raise ConfigError(str(answer.get("error", "the search server refused the search")))
    if resp.status_code != 200:
        raise ServerUnavailable(f"HTTP {resp.status_code}: {answer.get('error', resp.reason_phrase)}")
    try:
        hits = [[Hit(h["id"], h["score"], h["payload"]) for h in row] for row in answer["hits"]]
        return Searched(answer["mode"], hits)
    except (KeyError, TypeError) as exc:  # something else answers on that port
        raise ServerUnavailable(f"not a search server's answer (no {exc})") from None


class _BadRequest(ValueError):
    pass


def _parse(body: Any) -> tuple[str, list[str], int, Must, str | None]:
    if not isinstance(body, dict):
        raise _BadRequest("the request is not a JSON object")
    queries, k, must, mode = body.get("queries"), body.get("k", 5), body.get("must", []), body.get("mode")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries) or len(queries) > MAX_QUERIES:
        raise _BadRequest(f"queries must be a list of at most {MAX_QUERIES} strings")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise _BadRequest("k must be an integer from 1 to 100")
    if not isinstance(must, list) or not all(
        isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], list) for m in must
    ):
        raise _BadRequest("must must be a list of [field, [values]]")
    if mode is not None and mode not in SEARCH_MODES:
        raise _BadRequest(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    return str(body.get("store", "")), queries, k, [(f, [str(v) for v in values]) for f, values in must], mode


class WarmSearch:
    """The server's state: its settings, the resources it keeps open, and the timer that releases them."""

    def __init__(self, config: RagConfig, idle_release_s: float) -> None:
        self.config = config
        self.identity = store_identity(config)
        self.idle_release_s = idle_release_s
        self._resources: RagResources | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def _open(self) -> RagResources:
        from flows.rag.resources import open_resources

        current = self._resources
        # A migration that swapped the alias since: the model and collection to read are the new ones.
        if current is not None and current.ledger.published_model(current.collection) not in (
            None,
            current.config.embedding_model,
        ):
            self._close()
        if self._resources is None:
            resources = open_resources(self.config)
            resources.use_served_model()
            self._resources = resources
        return self._resources

    def _close(self) -> None:
        resources, self._resources = self._resources, None
        if resources is not None and resources.connections.qdrant.url is None:
            from flows.rag.store_edge import close_edge

            close_edge(resources.connections.qdrant_path)  # the embedded store's lock, for an ingest

    def search(self, queries: Sequence[str], k: int, must: Must, mode: str | None) -> Searched:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            try:
                return search_with(self._open(), queries, k, must, mode)
            finally:
                self._timer = threading.Timer(self.idle_release_s, self.release)
                self._timer.daemon = True
                self._timer.start()

    def release(self) -> None:
        with self._lock:
            self._close()

    def health(self) -> dict[str, Any]:
        with self._lock:
            model = self._resources.config.embedding_model if self._resources else None
        return {"store": self.identity, "model": model}


def _handler(warm: WarmSearch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive (a reader's one client asks again on the same connection) and no Nagle delay between the
        # headers and the body; searches still run one at a time (WarmSearch's lock).
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, warm.health())
            else:
                self._send(404, {"error": f"no {self.path} here: POST /search, GET /health"})

        def do_POST(self) -> None:
            if self.path != "/search":
                self._send(404, {"error": f"no {self.path} here: POST /search, GET /health"})
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
                if size > MAX_BODY_BYTES:
                    self.close_connection = True  # its body stays unread: the connection cannot carry another
                    raise _BadRequest(f"the request is over {MAX_BODY_BYTES >> 20} MB")
                store, queries, k, must, mode = _parse(json.loads(self.rfile.read(size) or b"null"))
            except (ValueError, _BadRequest) as exc:
                self._send(400, {"error": _one_line(str(exc))})
                return
            if store != warm.identity:
                self._send(409, {"error": f"this server searches {warm.identity}, not {store}"})
                return
            try:
                found = warm.search(queries, k, must, mode)
            except ConfigError as exc:
                self._send(400, {"error": str(exc)})
            except SwarmError as exc:
                self._send(503, {"error": str(exc)})
            except Exception as exc:  # one search failed; the server goes on serving
                log.exception("search failed")
                self._send(500, {"error": _one_line(f"{type(exc).__name__}: {exc}")})
            else:
                hits = [[{"id": h.id, "score": h.score, "payload": h.payload} for h in row] for row in found.hits]
                self._send(200, {"mode": found.mode, "hits": hits})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)  # queries are a reader's business: not in the node's logs by default

    return Handler


def serve(config: RagConfig, port: int = DEFAULT_PORT, idle_release_s: float = 30.0) -> None:
    """Answer searches on 127.0.0.1:``port`` until SIGTERM or Ctrl-C. The model is loaded before the port opens:
    the first search is as fast as the others."""
    warm = WarmSearch(config, idle_release_s)
    warm.search(["warm-up"], 1, (), None)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(warm))

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"searching {warm.identity} on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        warm.release()
