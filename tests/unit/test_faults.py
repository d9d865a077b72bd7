"""Faults under a run, told as one line by their cause however deeply they are wrapped."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from flows.common.errors import ConfigError, ServiceUnavailable
from flows.common.faults import as_swarm_error


def raised_from(cause: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException:
            raise outer  # noqa: B904  (the implicit __context__ is the case under test)
    except BaseException as exc:
        return exc


def sqlite_error(tmp_path: Path, mode: str) -> sqlite3.Error:
    """A real one: SQLite names its errors (sqlite_errorname), which the text alone does not always tell."""
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    conn = sqlite3.connect(f"file:{tmp_path / 'x.db'}?mode={mode}", uri=True)
    try:
        if mode == "rwc":
            conn.execute("PRAGMA max_page_count = 2")
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("the write went through")


@pytest.mark.parametrize(
    ("fault", "start"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/d/qdrant"), "no space left on the device (/d/qdrant)"),
        (OSError(errno.EROFS, "Read-only file system", "/d/ledger.db"), "the file system is read-only (/d/ledger.db)"),
        ("rwc", "no space left on the device (database or disk is full)"),
        ("ro", "the data folder is read-only (attempt to write a readonly database)"),
    ],
)  # fmt: skip
def test_disk_faults_are_one_line_naming_the_cause(tmp_path: Path, fault: OSError | str, start: str) -> None:
    cause = sqlite_error(tmp_path, fault) if isinstance(fault, str) else fault
    error = as_swarm_error(raised_from(cause, RuntimeError("Finished in state Failed")), [tmp_path])
    assert isinstance(error, ServiceUnavailable) and str(error).startswith(start)
    assert "\n" not in str(error) and "next run picks up" in str(error)


def test_a_disk_io_error_is_told_by_the_folder_it_hit(tmp_path: Path) -> None:
    """SQLite says "disk I/O error" for a full disk; the folders' file system says which it was."""
    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorname = "SQLITE_IOERR_WRITE"  # type: ignore[attr-defined]
    error = as_swarm_error(io_error, [Path("/proc/self")])  # procfs: no blocks free
    assert str(error).startswith("no space left on the device of /proc/self")
    assert str(as_swarm_error(io_error, [tmp_path])).startswith("cannot write to the disk (disk I/O error)")


def test_our_own_errors_are_kept_and_a_bug_is_not_a_fault() -> None:
    own = ConfigError("invalid setting: x")
    assert as_swarm_error(raised_from(own, KeyError("k"))) is own
    assert as_swarm_error(ZeroDivisionError("division by zero")) is None
    assert as_swarm_error(OSError(errno.ENOENT, "No such file")) is None
