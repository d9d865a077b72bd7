"""The per-file parse deadline, enforced inside the parser process (flows/rag/parser_pool.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.rag.parse import ParseProblem
from flows.rag.parser_pool import kill_tool_groups, run_with_deadline


def busy_for(seconds: float) -> str:
    """Pure-Python work that, like a parsing library, catches and ignores ordinary exceptions."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            sum(range(1000))
        except Exception:  # what a parsing library's broad handler does
            continue
    return "done"


def test_a_parse_over_its_deadline_becomes_a_failed_file_with_the_reason() -> None:
    started = time.monotonic()
    with pytest.raises(ParseProblem) as caught:
        run_with_deadline(0.2, busy_for, 10)
    assert time.monotonic() - started < 5
    assert (caught.value.status, caught.value.reason) == ("failed", "parsing took over 0.2 s")


def test_a_parse_within_its_deadline_returns_and_leaves_no_timer_or_handler_behind() -> None:
    handler_before = signal.getsignal(signal.SIGALRM)
    assert run_with_deadline(5, busy_for, 0.05) == "done"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler_before


def test_restarting_a_pool_kills_the_tools_a_hung_parser_started(tmp_path: Path) -> None:
    """A tool runs in a process group of its own (so a deadline kills it with its children); when the pool kills a
    parser stuck past every deadline, the tool's group goes too, instead of running on as an orphan."""
    marker = tmp_path / "tool-started"
    parser = subprocess.Popen(
        [sys.executable, "-c", "import sys; from flows.rag.convert import run_tool; "
         f"run_tool(['sh', '-c', 'touch {marker}; sleep 300 & sleep 300'])"],  # a tool with a child of its own
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        tool = int(Path(f"/proc/{parser.pid}/task/{parser.pid}/children").read_text().split()[0])
        kill_tool_groups(parser.pid)
        time.sleep(0.2)
        alive = [p for p in os.listdir("/proc") if p.isdigit() and _group_of(int(p)) == tool]
        assert alive == []
    finally:
        parser.kill()
        parser.wait()


def _group_of(pid: int) -> int | None:
    """The process group of a live process (a zombie waiting to be reaped is dead already)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return None if state in {"Z", "X"} else os.getpgid(pid)
    except (OSError, ProcessLookupError):
        return None
