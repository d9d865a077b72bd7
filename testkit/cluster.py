"""Real processes for the tests that start services: a ``prefect server start`` on loopback with its own
PREFECT_HOME and port, CLI calls, and child processes with their output in a log file (the three-host test
starts its own on its test hosts, tests/e2e/netns.py)."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]


def embedded_store_free(root: Path) -> bool:
    """Whether no process holds the embedded store at ``root`` (its folder's flock, flows/rag/store_edge.py)."""
    with (root / "lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's env without any Prefect setting (the in-process test harness sets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PYTHONPATH=str(REPO),  # this checkout's flows/ and blocks/, whatever the venv was installed from
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="true",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.update(extra)
    return env


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, cwd: Path = REPO) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_server(home: Path, log_dir: Path) -> tuple[Proc, str]:
    port = free_port()
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_UI_ENABLED="false",
        # the scheduler looks for due schedules every 2 s instead of 60 s, so a schedule fires within the test
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
    )
    server = Proc("server", [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log_dir)
    url = f"http://127.0.0.1:{port}/api"

    wait_healthy(server, f"{url}/health", 120, "the Prefect server's /api/health")
    return server, url


def wait_healthy(proc: Proc, health_url: str, timeout: float, what: str) -> None:
    """Wait until ``health_url`` answers 200 (a health path needs no auth string), failing at once with the
    process's log if it exits meanwhile."""

    def healthy() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            return httpx.get(health_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout, what)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout
