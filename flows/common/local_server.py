"""The CLI's own Prefect server: started in the background on first use, reused by every later command.

Without ``PREFECT_API_URL``, Prefect would start a temporary server for every command (~10 s on a small CPU,
more than a no-op sync itself). Instead the first command starts ``prefect server start`` once, under a
watcher (flows/common/server_watch.py) in a session of its own, and later commands find it:
* one per data folder: its PREFECT_HOME, database, log and state file are ``<data dir>/prefect/``, so two users
  or two data folders never share one (nor a port: each start takes a free one and writes it down);
* ``server.json`` (mode 0600) names the watcher's pid (its process group holds the server), the URL and an API
  auth string made at start, so another local user cannot read or start runs through the port;
* a state is stale when that pid is gone, is not our watcher (a reused pid), or the URL does not answer
  Prefect's health check (another program on the port): then the old group is stopped and a new server started;
* ``start.lock`` (flock) is held while a command checks and starts, so two commands at once start one server;
* each command holds ``users.lock`` shared until it exits; the watcher stops the server once nobody has held it
  for ``SWARM_SERVER_IDLE_MINUTES`` (default 60; 0: never), so an idle machine gets its CPU and memory back.
Standard library only: ``swarm server status`` and the watcher import nothing heavy.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from flows.common.errors import ServiceUnavailable

START_TIMEOUT_S = 180.0  # the first start migrates a new database: on a 2-core machine that takes ~10-30 s
STOP_GRACE_S = 15.0
WATCHER_MODULE = "flows.common.server_watch"
_users: list[IO[bytes]] = []  # this process's shared hold on users.lock, kept until it exits


@dataclass(frozen=True)
class Layout:
    """The files of one data folder's server."""

    home: Path  # the server's PREFECT_HOME

    @classmethod
    def under(cls, data_dir: Path) -> Layout:
        return cls(data_dir.expanduser().resolve() / "prefect")

    @property
    def state(self) -> Path:
        return self.home / "server.json"

    @property
    def start_lock(self) -> Path:
        return self.home / "start.lock"

    @property
    def users_lock(self) -> Path:
        return self.home / "users.lock"

    @property
    def log(self) -> Path:
        return self.home / "server.log"


@dataclass(frozen=True)
class Server:
    pid: int  # the watcher, leader of the process group that holds the server
    url: str  # http://127.0.0.1:<port>/api
    auth: str  # user:password for PREFECT_API_AUTH_STRING


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether a Prefect API answers at ``url``: its health path (open without the auth string) says true."""
    host_port = url.removeprefix("http://").split("/", 1)[0]
    host, _, port = host_port.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        return response.status == 200 and response.read().strip() == b"true"
    except OSError:
        return False
    finally:
        conn.close()


def is_watcher(pid: int, layout: Layout) -> bool:
    """Whether ``pid`` is this data folder's watcher (not a process that got the pid after it was gone)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return WATCHER_MODULE.encode() in argv and str(layout.home).encode() in argv


def read_state(layout: Layout) -> Server | None:
    try:
        data = json.loads(layout.state.read_text())
        return Server(pid=int(data["pid"]), url=str(data["url"]), auth=str(data["auth"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(layout: Layout, server: Server) -> None:
    tmp = layout.state.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"pid": server.pid, "url": server.url, "auth": server.auth}, handle)
    tmp.replace(layout.state)


def running(layout: Layout) -> Server | None:
    """The data folder's server when its watcher lives and its API answers, else None."""
    server = read_state(layout)
    if server and is_watcher(server.pid, layout) and healthy(server.url):
        return server
    return None


@contextmanager
def locked(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[IO[bytes]]:
    with path.open("ab") as handle:
        fcntl.flock(handle, mode)
        yield handle  # closing the file releases the lock


def _gone(pid: int) -> bool:
    """Whether the process has exited; a zombie counts (its parent, perhaps a command still running, reaps it)."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it where this process started it
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _stop_group(pid: int) -> None:
    """SIGTERM to the watcher's group; the watcher exits once the server has. Then SIGKILL to whatever is left
    (all of it if the grace ran out)."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _last_log_line(layout: Layout) -> str:
    try:
        lines = [line for line in layout.log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:300] if lines else "empty log"


def _start(layout: Layout, idle_minutes: float, timeout: float) -> Server:
    port = _free_port()
    server = Server(pid=0, url=f"http://127.0.0.1:{port}/api", auth=f"swarm:{secrets.token_hex(24)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(layout.home),
        PREFECT_SERVER_API_AUTH_STRING=server.auth,  # in the environment, never on a command line
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        # Only what recording a CLI's runs needs: no schedules, workers or automations are served here.
        **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in _UNUSED_SERVICES},
    )
    with layout.log.open("ab") as log:
        watcher = subprocess.Popen(
            [sys.executable, "-m", WATCHER_MODULE, str(layout.home), str(port), str(idle_minutes)],
            env=env, cwd=layout.home, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(pid=watcher.pid, url=server.url, auth=server.auth)
    _write_state(layout, server)
    deadline = time.monotonic() + timeout
    while not healthy(server.url, timeout=1.0):
        if watcher.poll() is not None or time.monotonic() > deadline:
            _stop_group(watcher.pid)
            layout.state.unlink(missing_ok=True)
            why = "it exited" if watcher.returncode is not None else f"no answer after {timeout:.0f} s"
            raise ServiceUnavailable(
                f"the local Prefect server did not start ({why}: {_last_log_line(layout)}; log: {layout.log})"
            )
        time.sleep(0.1)
    return server


_UNUSED_SERVICES = ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "PAUSE_EXPIRATIONS", "TRIGGERS")


def ensure(layout: Layout, idle_minutes: float, timeout: float = START_TIMEOUT_S) -> Server:
    """The data folder's running server, started when there is none; this process then holds it in use until
    it exits. ServiceUnavailable (one line) when it cannot start."""
    layout.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with locked(layout.start_lock):
        server = running(layout)
        if server is None:
            stale = read_state(layout)
            if stale and is_watcher(stale.pid, layout):
                _stop_group(stale.pid)  # alive but not answering: a hung server
            server = _start(layout, idle_minutes, timeout)
        users = layout.users_lock.open("ab")
        fcntl.flock(users, fcntl.LOCK_SH)  # taken under start.lock: the watcher cannot stop it in between
        _users.append(users)
    return server


def stop(layout: Layout) -> Server | None:
    """Stop the data folder's server (a command using it loses its API); the one stopped, or None."""
    if not layout.home.is_dir():
        return None
    with locked(layout.start_lock):
        server = read_state(layout)
        if server is None or not is_watcher(server.pid, layout):
            layout.state.unlink(missing_ok=True)
            return None
        _stop_group(server.pid)
        layout.state.unlink(missing_ok=True)
    return server
