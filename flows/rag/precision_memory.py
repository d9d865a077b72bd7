"""bf16 against fp32 on a CPU: timed once per machine and model, then remembered.

The timing (flows/rag/embed.py, measure_bf16_speedup) runs both precisions side by side at model load: seconds a
one-query ``swarm search`` spent every time for an answer that only changes with the CPU, torch or the weights.
Those make up the key, so a new CPU, a torch upgrade or another model is timed again. A lost or unreadable file
only means one more timing.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

from flows.common.atomic_file import write_atomically

log = logging.getLogger(__name__)

FILE_NAME = "cpu-precision.json"


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (platform.processor() is empty on most Linux machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(cpu: str, cores: int, torch_version: str, model_config: Path) -> str:
    """What the measured ratio depends on: the CPU and how many cores torch uses, torch, and the model (its
    config.json's path, size and modification time: a model folder replaced in place is timed again)."""
    stat = model_config.stat()
    return f"{cpu} x{cores} | torch {torch_version} | {model_config.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)} if isinstance(data, dict) else {}


def recalled_speedup(path: Path, key: str) -> float | None:
    """The fp32-over-bf16 ratio measured for ``key``, None when it was never measured here."""
    return _read(path).get(key)


def remember_speedup(path: Path, key: str, speedup: float) -> None:
    """Record ``speedup`` for ``key`` beside the others; a folder that cannot be written costs a warning, not
    the run."""
    entries = _read(path) | {key: round(speedup, 4)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(dict(sorted(entries.items())), indent=1) + "\n")
    except OSError as exc:
        reason = os.strerror(exc.errno or 0)
        log.warning("cannot remember the bf16 timing in %s (%s): it is timed again next time", path, reason)
