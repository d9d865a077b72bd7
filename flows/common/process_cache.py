"""Handles opened once per process and key (a store's folder, a server's client), closed when the process exits."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ProcessCache(Generic[K, V]):
    """One open handle per key for this process; ``close`` releases one, at ``close(key)`` or at exit."""

    def __init__(self, close: Callable[[V], object]) -> None:
        self._close = close
        self._handles: dict[K, V] = {}
        self._lock = threading.Lock()
        atexit.register(self.close_all)

    def get_or_open(self, key: K, opener: Callable[[], V]) -> V:
        """The handle for ``key``, opened by ``opener`` on first use; an opener that raises leaves nothing cached.
        Openers run under the lock, so two threads never open the same key twice."""
        with self._lock:
            if key not in self._handles:
                self._handles[key] = opener()
            return self._handles[key]

    def close(self, key: K) -> None:
        """Close the handle for ``key``, if open; the next get_or_open opens a new one."""
        with self._lock:
            handle = self._handles.pop(key, None)
        if handle is not None:
            self._close(handle)

    def close_all(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        for handle in handles:
            self._close(handle)
