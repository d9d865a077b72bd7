"""A pool of parser processes that survives a crashed or hung parser.

unstructured runs native code (pdfminer, lxml, onnx) that can hang or die on hostile files; a plain
ProcessPoolExecutor would then be broken for every later file. This wrapper restarts the pool and lets
the caller retry the files that were caught in the crash.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from flows.rag.parse import ParseProblem, configure_offline_parsing
from flows.rag.plan import FAILED

T = TypeVar("T")


def _warm_up() -> None:
    keep_torch_out()
    configure_offline_parsing()
    import unstructured.partition.auto  # noqa: F401  (pay the import once, not inside the first timeout)


def keep_torch_out() -> None:
    """Parser processes never need torch, but spaCy's thinc imports it whenever it is installed (for layers
    this pipeline does not use): ~180 MB per parser process (bench/bench_stages.py). Marking it missing
    makes thinc fall back to numpy, as on a machine without torch."""
    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]


class _OutOfTime(BaseException):
    """A BaseException, so that no library's ``except Exception`` around the parse can swallow it."""


def run_with_deadline(seconds: float, fn: Callable[..., T], *args: Any) -> T:
    """Run in a parser process: the clock starts when this file's parse starts, not while it waits in the queue
    behind other files. Python code is interrupted on time; native code stuck for good is the parent's backstop."""

    def out_of_time(signum: int, frame: Any) -> None:
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _OutOfTime:  # also when the alarm lands in the disarming above: the parse took the whole time
        raise ParseProblem(FAILED, f"parsing took over {seconds:g} s") from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class ParserPool:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent holds torch and tokenizer threads that must not be forked.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_up)

    def submit(self, fn: Any, *args: Any) -> tuple[Future[Any], ProcessPoolExecutor]:
        with self._lock:
            pool = self._pool
            return pool.submit(fn, *args), pool

    def restart(self, broken: ProcessPoolExecutor) -> None:
        """Kill the workers of ``broken`` (if it is still the current pool) and start fresh ones."""
        with self._lock:
            if self._pool is not broken:
                return  # another thread already restarted it
            for process in list(getattr(broken, "_processes", {}).values()):
                process.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def shutdown(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)


_pools: dict[int, ParserPool] = {}
_pools_lock = threading.Lock()


def get_parser_pool(workers: int) -> ParserPool:
    """Shared by every batch in this process, so workers start (and import unstructured) once."""
    workers = workers or default_workers()
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ParserPool(workers)
        return _pools[workers]
