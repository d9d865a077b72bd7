"""The CLI's local Prefect server: started once for a data folder and reused, one for two commands at once,
behind an auth string, replaced when its state is stale, stopped when unused or asked, one line when it cannot
start, never started where PREFECT_API_URL names an API. Every test kills whatever it left, also on failure."""

from __future__ import annotations

import base64
import fcntl
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows.common.errors import ServiceUnavailable
from flows.common.local_server import Layout, ensure, read_state, running, stop
from tests.flows.cli_runner import SWARM, swarm_env


def processes_of(layout: Layout) -> dict[int, str]:
    """Live processes of a data folder's server: the watcher names the folder in its argv, the server in its
    environment (PREFECT_HOME)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (str(layout.home).encode() in argv or f"PREFECT_HOME={layout.home}".encode() in env):
            found[int(entry.name)] = argv.replace(b"\0", b" ").decode()
    return found


def wait_gone(layout: Layout, timeout: float = 30) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (left := processes_of(layout)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    layout = Layout.under(tmp_path / "data")
    try:
        yield layout
    finally:
        for pid in processes_of(layout):
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)


def local_env(data: Path, **extra: str) -> dict[str, str]:
    """A user's environment: no PREFECT_API_URL, so the CLI uses its local server."""
    env = swarm_env(data)
    env.pop("PREFECT_API_URL")
    return env | extra


def auth_header(auth: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


@pytest.mark.slow
def test_commands_share_one_server_that_stops_once_unused(layout: Layout, tmp_path: Path) -> None:
    env = local_env(tmp_path / "data", SWARM_SERVER_IDLE_MINUTES="0.05")
    starts = [
        subprocess.Popen([SWARM, "server", "start"], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    lines = [start.communicate(timeout=180)[0].strip() for start in starts]
    assert [start.returncode for start in starts] == [0, 0], lines
    server = read_state(layout)
    assert server is not None and lines[0] == lines[1] and lines[0].startswith(f"running at {server.url} ")
    assert server.auth not in lines[0]
    assert sum("prefect server start" in argv for argv in processes_of(layout).values()) == 1

    with layout.users_lock.open("ab") as in_use:  # as a command does while it runs: no idle stop meanwhile
        fcntl.flock(in_use, fcntl.LOCK_SH)
        assert httpx.post(f"{server.url}/flow_runs/filter", json={}).status_code == 401  # no auth string
        docs = tmp_path / "docs"
        docs.mkdir()
        ingest = subprocess.run([SWARM, "ingest", str(docs)], env=env, capture_output=True, text=True, timeout=300)
        assert ingest.returncode == 0, ingest.stderr
        assert read_state(layout) == server  # reused, not started again
        headers = auth_header(server.auth)
        flows = httpx.post(f"{server.url}/flows/filter", json={}, headers=headers).json()
        runs = httpx.post(f"{server.url}/flow_runs/filter", json={}, headers=headers).json()
        assert "rag-sync" in {flow["name"] for flow in flows}  # the run was recorded here
        assert runs and {run["state_type"] for run in runs} == {"COMPLETED"}
        # ...with its logs, the INFO lines too, sent before the command exited; and no heartbeats, which only
        # the cluster's automations read
        logs = httpx.post(f"{server.url}/logs/filter", json={}, headers=headers).json()
        assert any(log["message"].startswith("planned: 0 new") for log in logs), logs
        beats = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}}}
        assert httpx.post(f"{server.url}/events/filter", json=beats, headers=headers).json()["events"] == []
        status = subprocess.run([SWARM, "server", "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and f"running at {server.url}" in status.stdout

    assert not wait_gone(layout), "the server outlived its idle minutes"
    assert not layout.state.exists()
    status = subprocess.run([SWARM, "server", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and status.stdout.startswith("not running")


class NotPrefect(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_stale_state_is_replaced_and_stop_leaves_nothing(layout: Layout) -> None:
    other = http.server.HTTPServer(("127.0.0.1", 0), NotPrefect)  # another program now holds the port
    threading.Thread(target=other.serve_forever, daemon=True).start()
    stale_url = f"http://127.0.0.1:{other.server_port}/api"
    layout.home.mkdir(parents=True)
    # ...and the pid is alive but no watcher of ours (a pid reused after the server was gone)
    layout.state.write_text(f'{{"pid": {os.getpid()}, "url": "{stale_url}", "auth": "a:b"}}')
    try:
        server = ensure(layout, idle_minutes=0)
        assert server.url != stale_url and running(layout) == server
        assert ensure(layout, idle_minutes=0) == server
        assert stop(layout) == server
    finally:
        other.shutdown()
    assert not wait_gone(layout) and not layout.state.exists()
    assert stop(layout) is None and running(layout) is None


def test_a_server_that_cannot_start_is_one_line_and_leaves_nothing(layout: Layout) -> None:
    layout.home.mkdir(parents=True)
    (layout.home / "prefect.db").write_bytes(b"this is not an SQLite database\n" * 64)
    with pytest.raises(ServiceUnavailable) as raised:
        ensure(layout, idle_minutes=0, timeout=120)
    message = str(raised.value)
    assert message.startswith("the local Prefect server did not start (it exited: ") and "\n" not in message
    assert str(layout.log) in message
    assert not processes_of(layout) and not layout.state.exists()


def test_a_command_that_names_no_block_imports_no_prefect(tmp_path: Path) -> None:
    """``swarm status`` reads the ledger only: the config, its blocks' resolver and the CLI load without Prefect."""
    code = (
        "import sys\n"
        "from flows.cli import app\n"
        "from flows.common.blocks import resolve_ledger_url\n"
        "from flows.rag.config import load_config\n"
        "resolve_ledger_url(load_config({}).ledger_block, None)\n"
        "sys.exit(' '.join(m for m in sys.modules if m.split('.')[0] == 'prefect') or None)\n"
    )
    env = swarm_env(tmp_path) | {"SWARM_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr[-2000:]


def test_with_an_api_url_nothing_is_started(tmp_path: Path) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    done = subprocess.run([SWARM, "ingest", str(docs)], env=swarm_env(data), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not Layout.under(data).home.exists()
    bad = swarm_env(data) | {"SWARM_PREFECT_SERVER": "standing"}
    done = subprocess.run([SWARM, "ingest", str(docs)], env=bad, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: SWARM_PREFECT_SERVER must be local or temporary, not 'standing'"
