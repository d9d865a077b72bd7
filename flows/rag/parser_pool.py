"""A pool of parser processes that survives a crashed or hung parser.

unstructured runs native code (pdfminer, lxml, onnx) that can hang or die on hostile files; a plain
ProcessPoolExecutor would then be broken for every later file. This wrapper restarts the pool and lets
the caller retry the files that were caught in the crash. Each process runs under an address-space limit
(RLIMIT_AS), so that one file (a zip bomb) fails alone instead of taking the node's memory; the tools a
parser starts (LibreOffice, pandoc, tesseract: flows/rag/convert.py) inherit that limit, and a restart kills
them with their parser.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from flows.rag.ledger import FAILED
from flows.rag.parse import ParseProblem, configure_offline_parsing

T = TypeVar("T")


def _warm_up(memory_mb: int | None) -> None:
    keep_torch_out()
    configure_offline_parsing()
    import unstructured.partition.auto  # noqa: F401  (pay the import once, not inside the first timeout)

    if memory_mb:
        # After the imports, so that a limit set too low fails each file with its reason, not the pool's start.
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))


def memory_limit_reason() -> str:
    """Why a parse that raised MemoryError failed: this process's address-space limit, or the machine's memory."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return "the parser ran out of memory"
    return (
        f"parsing needs more memory than the parser's limit of {limit // 2**20} MB"
        " (parse_memory_mb, SWARM_PARSE_MEMORY_MB)"
    )


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
    behind other files. Python code is interrupted on time; native code stuck for good is the parent's backstop.
    Running out of the process's memory limit is this file's problem too: the process lives on for the next."""

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
    except MemoryError:  # what the parse held is freed as the exception unwinds it
        raise ParseProblem(FAILED, memory_limit_reason()) from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def kill_tool_groups(pid: int) -> None:
    """Kill the process groups of a parser's tools (convert.run_tool starts each as a group leader, its direct
    child): killing the parser alone would leave a hung LibreOffice running."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # already gone, or not Linux
        return
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(int(child)) == int(child):
                os.killpg(int(child), signal.SIGKILL)


def default_workers() -> int:
    """One parser per core this process may run on (its CPU affinity: a container or a systemd CPUAffinity= gets
    fewer than the machine has), less one for the embed and write stages: on thanos the GPU embeds, and feeding
    it takes about a core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores - 1)


class ParserPool:
    def __init__(self, workers: int, memory_mb: int | None = None) -> None:
        self.workers = workers
        self.memory_mb = memory_mb  # each process's address-space limit; None: unlimited
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent holds torch and tokenizer threads that must not be forked.
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_warm_up,
            initargs=(self.memory_mb,),
        )

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
                kill_tool_groups(process.pid)
                process.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def shutdown(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)


_pools: dict[tuple[int, int], ParserPool] = {}
_pools_lock = threading.Lock()


def get_parser_pool(workers: int, memory_mb: int) -> ParserPool:
    """Shared by every batch in this process, so workers start (and import unstructured) once."""
    key = (workers or default_workers(), memory_mb)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ParserPool(*key)
        return _pools[key]
