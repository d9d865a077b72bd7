"""Faults of the machine under a run (a full disk, a read-only folder, a service gone mid-run) as one line.

Libraries report them as their own exceptions, often wrapped in others; the user needs the cause and what to do.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from flows.common.errors import ServiceUnavailable, SwarmError

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}
_NEARLY_FULL = 1 << 20  # bytes free under which a failed write is put down to a full disk
_RERUN = "the next run picks up where this one stopped"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _folder_fault(folders: Sequence[Path]) -> str | None:
    """What is wrong with the file system under one of ``folders`` (read-only, or full), if anything."""
    for folder in folders:
        probe = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if probe is None:
            continue
        stats = os.statvfs(probe)
        if stats.f_flag & os.ST_RDONLY:
            return f"the file system of {folder} is read-only: make it writable; {_RERUN}"
        if stats.f_bavail * stats.f_frsize < _NEARLY_FULL:
            return f"no space left on the device of {folder}: free some space; {_RERUN}"
    return None


def _os_fault(exc: OSError, folders: Sequence[Path]) -> str | None:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in _DISK_FULL:
        return f"no space left on the device{where}: free some space; {_RERUN}"
    if exc.errno in _READ_ONLY:
        return f"the file system is read-only{where}: make the data folder writable; {_RERUN}"
    if exc.errno in _DENIED:
        return f"permission denied{where}"
    return _folder_fault(folders) if exc.errno == errno.EIO else None


def _sqlite_fault(exc: sqlite3.Error, folders: Sequence[Path]) -> str | None:
    # SQLite reports a failed write as "disk I/O error" whatever the cause: the folders tell which it was.
    name = getattr(exc, "sqlite_errorname", "")
    if not name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_READONLY", "SQLITE_CANTOPEN")):
        return None
    if found := _folder_fault(folders):
        return found
    if name == "SQLITE_FULL":
        return f"no space left on the device ({exc}): free some space; {_RERUN}"
    if name.startswith("SQLITE_READONLY"):
        return f"the data folder is read-only ({exc}): make it writable; {_RERUN}"
    return f"cannot write to the disk ({exc}); {_RERUN}"


def _qdrant_fault(exc: BaseException) -> str | None:
    # By module name: importing qdrant-client takes 0.7 s, and a failure without it never involves it.
    if not type(exc).__module__.startswith("qdrant_client"):
        return None
    text = " ".join(str(exc).split())[:200]
    if "No space left" in text:
        return f"Qdrant has no space left on its device: free some space; {_RERUN}"
    return f"Qdrant failed: {text}"


def as_swarm_error(exc: BaseException, folders: Sequence[Path] = ()) -> SwarmError | None:
    """The one-line error a fault stands for, or None for anything else (a bug: it deserves a traceback).
    ``folders``: where the run writes, looked at when the error does not say what went wrong."""
    for cause in _causes(exc):
        if isinstance(cause, SwarmError):
            return cause
        message = None
        if isinstance(cause, OSError):
            message = _os_fault(cause, folders)
        elif isinstance(cause, sqlite3.Error):
            message = _sqlite_fault(cause, folders)
        else:
            message = _qdrant_fault(cause)
        if message:
            return ServiceUnavailable(message)
    return None
