"""Running the real ``swarm`` console script in a subprocess, against the test session's Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

SWARM = str(Path(sys.executable).parent / "swarm")


def swarm_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env.update(
        SWARM_DATA_DIR=str(data_dir),
        PREFECT_API_URL=str(PREFECT_API_URL.value()),  # the harness's server: no temporary one per run
        COLUMNS="200",
    )
    return env


def run_swarm(data_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWARM, *args], env=swarm_env(data_dir), capture_output=True, text=True, timeout=timeout)


def start_swarm(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SWARM, *args], env=swarm_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
