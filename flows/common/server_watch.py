"""The watcher of the CLI's local Prefect server (flows/common/local_server.py starts it in a session of its own).

    python -m flows.common.server_watch <PREFECT_HOME> <port> <idle minutes>

It runs ``prefect server start`` as its child and ends with it: on SIGTERM it stops the server; when no command
has held ``users.lock`` for the idle minutes (0: never) it stops the server and removes the state file, holding
``start.lock`` so that no command attaches meanwhile. When the server exits on its own the watcher exits too
(never waiting for ``start.lock``: a command starting it holds that); commands see the state as stale.
"""

from __future__ import annotations

import fcntl
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO

from flows.common.local_server import Layout

CHECK_EVERY_S = 15.0
STOP_GRACE_S = 10.0


def _try_lock(handle: IO[bytes]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _stop(server: subprocess.Popen[bytes]) -> int:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            server.kill()
    return server.wait()


def main(home: str, port: str, idle_minutes: str) -> int:
    layout = Layout(Path(home))
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port, "--no-ui"],
        stdin=subprocess.DEVNULL,
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        # Only pass it on: the loop below returns once the server has exited; whoever stopped us removes the
        # state file (under start.lock) and kills the group if the server outlives its grace.
        server.terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    idle_limit_s = float(idle_minutes) * 60
    every_s = min(CHECK_EVERY_S, idle_limit_s / 3) if idle_limit_s else CHECK_EVERY_S
    idle_since = time.monotonic()
    while True:
        try:
            # Ended on its own: the next command finds the state stale and starts a new one.
            return server.wait(every_s)
        except subprocess.TimeoutExpired:
            pass
        with layout.start_lock.open("ab") as start:
            # Commands take users.lock only while holding start.lock: holding it, nobody can attach.
            if _try_lock(start):
                with layout.users_lock.open("ab") as users:
                    in_use = not _try_lock(users)
            else:
                in_use = True  # a command is attaching right now
            if in_use:
                idle_since = time.monotonic()
            elif idle_limit_s and time.monotonic() - idle_since >= idle_limit_s:
                print(f"unused for {idle_minutes} min: stopping", flush=True)
                code = _stop(server)
                layout.state.unlink(missing_ok=True)
                return code


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
