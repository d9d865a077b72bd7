"""A stand-in ``nvidia-smi`` on PATH: prints the given query output and exits with the given code."""

from __future__ import annotations

import stat
from pathlib import Path


def fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> Path:
    """Write ``folder/nvidia-smi``; ``output`` must not hold a single quote (it is a shell literal)."""
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")  # printf: a builtin, PATH may be bare
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script
