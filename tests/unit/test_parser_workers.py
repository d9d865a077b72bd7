"""How many parser processes a node starts by default."""

from __future__ import annotations

import os

import pytest

from flows.rag import parser_pool


@pytest.mark.parametrize(("allowed", "workers"), [({0}, 1), ({0, 1}, 1), (set(range(16)), 15), ({3, 5, 7, 9}, 3)])
def test_parsers_fill_the_cores_this_process_may_use_but_one(
    monkeypatch: pytest.MonkeyPatch, allowed: set[int], workers: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine's count is not what a container may use
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: allowed)
    assert parser_pool.default_workers() == workers
