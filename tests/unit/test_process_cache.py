"""One open handle per key and process, closed on request or at exit (flows/common/process_cache.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from flows.common.process_cache import ProcessCache


class _Handle:
    def __init__(self, key: str) -> None:
        self.key = key
        self.closed = 0


def _close(handle: _Handle) -> None:
    handle.closed += 1


def test_a_key_is_opened_once_and_each_key_gets_its_own_handle() -> None:
    cache: ProcessCache[str, _Handle] = ProcessCache(_close)
    opened: list[str] = []

    def opener(key: str) -> Callable[[], _Handle]:
        def open_() -> _Handle:
            opened.append(key)
            return _Handle(key)

        return open_

    first = cache.get_or_open("a", opener("a"))
    assert cache.get_or_open("a", opener("a")) is first
    other = cache.get_or_open("b", opener("b"))
    assert other is not first and other.key == "b"
    assert opened == ["a", "b"]


def test_an_opener_that_fails_leaves_nothing_behind() -> None:
    cache: ProcessCache[str, _Handle] = ProcessCache(_close)

    def broken() -> _Handle:
        raise OSError("no such folder")

    with pytest.raises(OSError, match="no such folder"):
        cache.get_or_open("a", broken)
    assert cache.get_or_open("a", lambda: _Handle("fresh")).key == "fresh"


def test_close_releases_the_handle_once_and_the_next_use_opens_a_new_one() -> None:
    cache: ProcessCache[str, _Handle] = ProcessCache(_close)
    first = cache.get_or_open("a", lambda: _Handle("a"))

    cache.close("a")
    cache.close("a")  # already closed: nothing to do
    cache.close("never-opened")

    assert first.closed == 1
    again = cache.get_or_open("a", lambda: _Handle("a"))
    assert again is not first
    cache.close_all()
    assert (first.closed, again.closed) == (1, 1)


def test_handles_still_open_are_closed_when_the_process_exits() -> None:
    script = """
from flows.common.process_cache import ProcessCache
cache = ProcessCache(lambda key: print("closed", key))
cache.get_or_open("a", lambda: "a")
cache.get_or_open("b", lambda: "b")
cache.get_or_open("c", lambda: "c")
cache.close("c")
print("exiting")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.splitlines() == ["closed c", "exiting", "closed a", "closed b"]
