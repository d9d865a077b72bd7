"""SIGKILL at any point of an ingest, then a re-run, ends exactly where a clean run ends."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from flows.common.db import Database
from testkit.documents import write_document
from tests.flows.cli_runner import run_swarm, start_swarm
from tests.flows.rag_checks import all_points, assert_consistent, embedded_store, ledger_rows

SUBJECTS = [
    "otters", "glaciers", "violins", "satellites", "mushrooms", "bridges", "owls", "tea", "volcanoes",
    "typewriters", "coral", "kites", "bicycles", "lighthouses", "honey", "compasses", "tides", "ferns",
]  # fmt: skip


def make_docs(root: Path) -> None:
    root.mkdir()
    for i, subject in enumerate(SUBJECTS):
        extension = (".md", ".txt", ".html")[i % 3]
        write_document(
            root / f"{i:02d}-{subject}{extension}", f"This document is all about {subject} and their history."
        )


def count_status(ledger_url: str, status: str) -> int:
    try:
        with Database(ledger_url).connect() as conn:
            return conn.execute("SELECT count(*) FROM rag_documents WHERE status = %s", (status,)).fetchone()[0]
    except Exception:
        return 0  # not created yet


def kill_when(data: Path, docs: Path, ready: callable, limit_s: float = 240) -> None:
    process = start_swarm(data, "ingest", str(docs), "--batch-files", "2")
    deadline = time.monotonic() + limit_s
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the ingest finished before the kill point: " + process.stderr.read()[-500:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_sigkill_then_rerun_converges_to_a_clean_run(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    make_docs(docs)
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    assert run_swarm(clean, "ingest", str(docs)).returncode == 0

    ledger = f"sqlite:///{crashed / 'ledger.db'}"
    kill_when(crashed, docs, lambda: count_status(ledger, "pending") > 0)  # before any point is written
    kill_when(crashed, docs, lambda: count_status(ledger, "indexed") >= 3)  # part-way through the batches
    kill_when(crashed, docs, lambda: count_status(ledger, "indexed") >= len(SUBJECTS) // 2)
    result = run_swarm(crashed, "ingest", str(docs))
    assert result.returncode == 0, result.stderr

    states = {}
    for data in (clean, crashed):
        with embedded_store(data) as store:
            assert_consistent(store, f"sqlite:///{data / 'ledger.db'}")
            states[data] = sorted((p["id"], p["version"], p["text"]) for p in all_points(store))
    assert states[crashed] == states[clean]
    rows = ledger_rows(ledger)
    assert {r[0] for r in rows.values()} == {"indexed"}
    assert {k: r[2] for k, r in rows.items()} == {
        k: r[2] for k, r in ledger_rows(f"sqlite:///{clean / 'ledger.db'}").items()
    }
