"""The peer benchmark's memory figure covers the whole process tree, not just the process it started."""

from __future__ import annotations

import sys

from bench.treewatch import run_measured

CHILD_HOLDS_300_MB = (
    "import subprocess, sys\n"
    "child = 'import time; b = bytearray(300 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1.5)'\n"
    "subprocess.run([sys.executable, '-c', child], check=True)\n"
    "print('done')\n"
)


def test_peak_rss_includes_grandchildren() -> None:
    measured = run_measured([sys.executable, "-c", CHILD_HOLDS_300_MB], poll_s=0.05)
    assert measured.returncode == 0 and measured.stdout.strip() == "done"
    assert measured.peak_rss_mb > 300
    assert measured.wall_s >= 1.5
