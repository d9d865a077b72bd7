"""The ``swarm`` command under faults of the machine: a full disk, a read-only data folder, a ledger that goes away
mid-run, and being killed. Each is one line (never a traceback), and a re-run picks up; a kill leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from testkit.documents import write_document
from tests.conftest import PG_ADMIN_URL
from tests.flows.cli_runner import run_swarm, session_processes, start_swarm
from tests.flows.rag_checks import assert_consistent, embedded_store, ledger_rows

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")


def write_docs(folder: Path, names: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        write_document(folder / f"{name}.md", f"This note is about {name}, and {name} alone, at some length.")


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def assert_complete(data: Path, ledger_url: str, documents: int) -> None:
    rows = ledger_rows(ledger_url)
    assert len(rows) == documents and {r[0] for r in rows.values()} == {"indexed"}
    with embedded_store(data) as store:
        assert_consistent(store, ledger_url)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A small file system of its own for the data folder (Qdrant Edge takes ~52 MB on tmpfs for a few points)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
    return filler


@needs_root
@pytest.mark.slow
def test_a_full_disk_then_a_read_only_one_are_one_line_and_a_rerun_picks_up(tmp_path: Path, small_disk: Path) -> None:
    docs, data = tmp_path / "docs", small_disk / "data"
    ledger_url = f"sqlite:///{data / 'ledger.db'}"
    write_docs(docs, ["otters", "glaciers"])
    assert run_swarm(data, "ingest", str(docs)).returncode == 0

    write_docs(docs, ["violins", "owls", "kites"])
    filler = fill(small_disk)
    line = one_error_line(run_swarm(data, "ingest", str(docs)), 1)
    assert "no space left on the device" in line and "next run picks up" in line
    filler.unlink()
    assert run_swarm(data, "ingest", str(docs)).returncode == 0
    assert_complete(data, ledger_url, 5)

    # Read-only: even a sync with nothing to do records its run, so it cannot start.
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        line = one_error_line(run_swarm(data, "ingest", str(docs)), 1)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert "read-only" in line
    assert run_swarm(data, "ingest", str(docs)).returncode == 0
    assert_complete(data, ledger_url, 5)


def ledger_count(url: str, status: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            return conn.execute("SELECT count(*) FROM rag_documents WHERE status = %s", (status,)).fetchone()[0]
    except psycopg.Error:
        return 0  # not created yet


def cut_off(name: str, allow: bool) -> None:
    """A database that stops (or starts again) taking connections, its sessions terminated: a ledger gone."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


@pytest.fixture
def pg_ledger() -> Iterator[tuple[str, str]]:
    name = f"swarm_gone_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_a_ledger_gone_mid_run_is_one_line_and_a_rerun_picks_up(tmp_path: Path, pg_ledger: tuple[str, str]) -> None:
    name, url = pg_ledger
    docs, data = tmp_path / "docs", tmp_path / "data"
    subjects = ["otters", "glaciers", "violins", "owls"]
    write_docs(docs, subjects)
    process = start_swarm(data, "ingest", str(docs), "--ledger-url", url, "--batch-files", "1")
    try:
        deadline = time.monotonic() + 240
        while ledger_count(url, "indexed") < 1 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the ingest ended before the ledger went away"
        cut_off(name, allow=False)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        cut_off(name, allow=True)
    line = one_error_line(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), 1)
    assert "ledger" in line and name in line

    assert run_swarm(data, "ingest", str(docs), "--ledger-url", url).returncode == 0
    assert_complete(data, url, len(subjects))


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the kill tests: the temporary server migrates its database once."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_ingest_leaves_nothing_running(tmp_path: Path, prefect_home: Path, how: signal.Signals) -> None:
    docs = tmp_path / "docs"
    write_docs(docs, ["otters", "glaciers", "violins"])
    process = start_swarm(tmp_path / "data", "ingest", str(docs), prefect_home=prefect_home)
    helpers = ("uvicorn", "multiprocessing.spawn", "multiprocessing.resource_tracker")
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            running = " ".join(session_processes(process.pid).values())
            if all(helper in running for helper in helpers):
                break
            time.sleep(0.1)
        assert process.poll() is None, "the ingest ended before its helpers ran: " + process.stderr.read()[-500:]
        os.kill(process.pid, how)  # the process the user started, not its group: a kill(1) or the OOM killer
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while (left := session_processes(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running after {how.name}: {left}"
    finally:
        for pid in session_processes(process.pid):
            os.kill(pid, signal.SIGKILL)
