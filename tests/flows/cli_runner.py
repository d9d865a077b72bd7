"""Running the real ``swarm`` console script in a subprocess, against the test session's Prefect API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect.settings import PREFECT_API_URL

SWARM = str(Path(sys.executable).parent / "swarm")


def swarm_env(data_dir: Path, prefect_home: Path | None = None) -> dict[str, str]:
    """``prefect_home``: no API URL and SWARM_PREFECT_SERVER=temporary, so Prefect starts a temporary server of its
    own for the command (where a user's command would start its lasting local one, tests/flows/test_cli_server.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    env.update(SWARM_DATA_DIR=str(data_dir), COLUMNS="200")
    if prefect_home is None:
        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the harness's server: no temporary one per run
    else:
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_HOME"] = str(prefect_home)
        env["SWARM_PREFECT_SERVER"] = "temporary"
    return env


def run_swarm(data_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWARM, *args], env=swarm_env(data_dir), capture_output=True, text=True, timeout=timeout)


def start_swarm(data_dir: Path, *args: str, prefect_home: Path | None = None) -> subprocess.Popen[str]:
    """In a session of its own: every process it starts carries the session id, also once orphaned."""
    return subprocess.Popen(
        [SWARM, *args], env=swarm_env(data_dir, prefect_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def session_processes(session: int) -> dict[int, str]:
    """Live processes of a session, by pid: orphans keep their session id after their parent is gone."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            state, _, _, sid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            if int(sid) == session and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
    return found
