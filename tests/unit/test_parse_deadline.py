"""The per-file parse deadline, enforced inside the parser process (flows/rag/parser_pool.py)."""

from __future__ import annotations

import signal
import time

import pytest

from flows.rag.parse import ParseProblem
from flows.rag.parser_pool import run_with_deadline


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
