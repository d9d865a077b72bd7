"""Run a command and measure it: wall seconds and the peak summed RSS of its whole process tree."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float
    stdout: str
    returncode: int


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # exited between listing and reading
            total += proc.memory_info().rss
    return total


def run_measured(command: list[str], env: dict[str, str] | None = None, poll_s: float = 0.1) -> Measured:
    """Poll the tree every ``poll_s``: a short-lived peak between polls can be missed, the same for both sides."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    root = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(root))
            except psutil.Error:
                return
            time.sleep(poll_s)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, _ = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    return Measured(wall, peak / 2**20, stdout, proc.returncode)
