"""Progress of long loops, reported to whoever listens in this process (the CLI's progress bar)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int], None]  # (what, how many more done)

_listeners: list[Listener] = []
_lock = threading.Lock()


def report(what: str, advance: int = 1) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(what, advance)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
