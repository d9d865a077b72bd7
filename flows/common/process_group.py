"""A command whose helper processes die with it, however it is stopped.

A flow run started by the CLI has helpers: Prefect's temporary API server (when PREFECT_API_URL is unset), the
parser processes and multiprocessing's resource tracker. A process killed with SIGKILL cannot take its children
along, so the command's work runs in a forked child that leads a process group of its own (everything it starts
joins that group), while the process the user started only waits:
* a signal to the waiting process (SIGTERM, SIGINT, SIGHUP) is passed to the child, and the whole group is killed
  if the child has not ended 10 s later (or at a second signal);
* if the waiting process dies without a word (SIGKILL), the child's lifeline pipe closes and it kills the group;
* when the child exits, whatever it left in its group is killed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import suppress
from types import FrameType

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_GRACE_S = 10  # from a forwarded signal to killing the group


def _kill_group_on_eof(lifeline: int) -> None:
    while os.read(lifeline, 1):  # nothing is ever written: this returns only when the waiting process is gone
        pass
    os.killpg(0, signal.SIGKILL)


def _wait_for(child: int) -> int:
    """In the waiting process: pass signals on, wait, kill the leftovers; the child's exit code."""
    signalled: list[int] = []

    def kill_group(signum: int = signal.SIGKILL, frame: FrameType | None = None) -> None:
        with suppress(ProcessLookupError):
            os.killpg(child, signal.SIGKILL)

    def forward(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)
        if len(signalled) > 1:
            kill_group()  # a second signal means "now"
            return
        # To the child alone: it may still record the end of its run through the temporary server (which the
        # group would have taken down), but only for so long.
        with suppress(ProcessLookupError):
            os.kill(child, signum)
        signal.alarm(_GRACE_S)

    signal.signal(signal.SIGALRM, kill_group)
    for signum in _FORWARDED:
        signal.signal(signum, forward)
    _, status = os.waitpid(child, 0)  # retried after each handler (PEP 475)
    with suppress(ProcessLookupError):
        os.killpg(child, signal.SIGKILL)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128+N


def lead_own_group() -> None:
    """Return in a child process that leads its own process group; the calling process never returns: it waits
    for the child and exits with its code. Call before any thread starts (it forks)."""
    lifeline, keepalive = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(keepalive)
        os.setpgid(0, 0)
        # A signal reaches the child only when the waiting process passes it on, so it must act on it even where
        # the command was started with it ignored (a shell's background job inherits SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        threading.Thread(target=_kill_group_on_eof, args=(lifeline,), name="lifeline", daemon=True).start()
        return
    os.close(lifeline)
    with suppress(PermissionError, ProcessLookupError):
        os.setpgid(child, child)  # also here: a signal may arrive before the child has run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_wait_for(child))
