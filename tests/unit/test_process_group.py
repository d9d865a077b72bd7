"""A command's helper processes die with it: by a signal, by SIGKILL, or when it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flows.cli_runner import session_processes

REPO = Path(__file__).resolve().parents[2]
COMMAND = """
import subprocess, sys, time
from flows.common.process_group import lead_own_group
lead_own_group()
subprocess.Popen(["sleep", "120"])  # a helper, as Prefect's temporary server or a parser process
print("ready", flush=True)
time.sleep(float(sys.argv[1]))
sys.exit(3)
"""


def start(seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(seconds)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def gone_within(session: int, seconds: float) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    while (left := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize(
    ("how", "code"),
    [(signal.SIGKILL, -9), (signal.SIGTERM, 128 + 15), (signal.SIGINT, 128 + 2)],
    ids=["SIGKILL", "SIGTERM", "SIGINT"],
)
def test_the_helpers_die_with_the_command(how: signal.Signals, code: int) -> None:
    command = start(120)
    try:
        assert command.stdout is not None and command.stdout.readline() == "ready\n"
        assert len(session_processes(command.pid)) == 3  # the waiting process, the child, its helper
        os.kill(command.pid, how)
        assert command.wait(timeout=20) == code
        assert gone_within(command.pid, 10) == {}
    finally:
        for pid in session_processes(command.pid):
            os.kill(pid, signal.SIGKILL)


def test_the_command_exits_with_its_childs_code_and_takes_the_helpers_along() -> None:
    command = start(0)
    try:
        assert command.wait(timeout=20) == 3
        assert gone_within(command.pid, 10) == {}
    finally:
        for pid in session_processes(command.pid):
            os.kill(pid, signal.SIGKILL)
