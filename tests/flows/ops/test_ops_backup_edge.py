"""Backups of the embedded store (Qdrant Edge) through the backup and restore flows: a shard snapshot per
collection, verified by restoring it with Edge, and put back by the restore flow."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.common.db import Database
from flows.ops import backup_edge as be
from flows.ops.backup import backup
from flows.ops.backup_catalog import BackupFailed, Catalog
from flows.ops.restore import restore
from flows.rag.ids import point_id
from flows.rag.store_edge import EdgeStore, close_edge, open_edge
from testkit.cluster import embedded_store_free

WORDS = ["owls", "bees", "tides", "comets", "ferns", "glaciers"]


def _write_store(root: Path) -> int:
    """A store made by the project's own writer: dense and BM25 vectors, payloads, the alias."""
    store = EdgeStore(open_edge(root), "documents", "test-model", 8)
    store.ensure_collection()
    rng = np.random.default_rng(3)
    for n, word in enumerate(WORDS):
        ids = [point_id("S", word, i) for i in range(40)]
        payloads = [
            {"source_id": "S", "doc_id": word, "version": "v1", "text": f"all about {word} {i}"} for i in range(40)
        ]
        store.upsert(ids, rng.normal(size=(40, 8)).astype(np.float32) + n, payloads)
    close_edge(root)
    return 40 * len(WORDS)


@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "qdrant"
    _write_store(root)
    yield root
    close_edge(root)


def _params(tmp_path: Path, store: Path) -> dict[str, object]:
    return {
        "backup_dir": str(tmp_path / "backups"),
        "postgres_dsn": None,
        "redis_url": None,
        "qdrant_url": None,
        "qdrant_path": str(store),
        "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        "min_free_bytes": 0,
    }


def _search(root: Path, word: str) -> list[tuple[str, str]]:
    store = EdgeStore(open_edge(root), "documents", "test-model", 8)
    try:
        hits = store.search(np.linspace(-1, 1, 8).tolist(), 5, text=word, mode="hybrid")
    finally:
        close_edge(root)
    return [(h.payload["doc_id"], h.id) for h in hits]


def test_a_snapshot_is_verified_by_edge_and_restores_the_store_elsewhere(tmp_path: Path, edge_store: Path) -> None:
    params = _params(tmp_path, edge_store)
    assert backup(**params) == {"good": 1, "failed": 0, "pruned": 0}
    assert embedded_store_free(edge_store)  # released for the next sync
    (entry,) = Catalog(Database(str(params["ledger_url"]))).series("qdrant-edge", "documents__test-model__8")
    assert entry.verified and entry.detail == "240 points restored by Edge and 20 sampled points identical"
    apparent = sum(p.stat().st_size for p in edge_store.rglob("*") if p.is_file())
    assert entry.size_bytes is not None and entry.size_bytes < apparent / 10  # Edge's sparse files stay sparse

    elsewhere = tmp_path / "new-node"
    message = restore(entry.id, qdrant_url=None, qdrant_path=str(elsewhere), ledger_url=params["ledger_url"])
    assert message == "restored 240 points into documents__test-model__8; alias documents serves it"
    assert embedded_store_free(elsewhere)
    for word in ("tides", "ferns"):  # the same hits, BM25 matches of the text among them
        hits = _search(elsewhere, word)
        assert hits == _search(edge_store, word) and word in {doc for doc, _ in hits}


def test_a_restore_replaces_a_collection_only_on_request_and_never_half(tmp_path: Path, edge_store: Path) -> None:
    params = _params(tmp_path, edge_store)
    backup(**params)
    (entry,) = Catalog(Database(str(params["ledger_url"]))).series("qdrant-edge", "documents__test-model__8")
    store = EdgeStore(open_edge(edge_store), "documents", "test-model", 8)
    store.delete_documents("S", ["owls", "bees"])
    assert store.count() == 160
    close_edge(edge_store)

    with pytest.raises(BackupFailed, match="exists and holds points: pass overwrite=True"):
        restore(entry.id, qdrant_url=None, qdrant_path=str(edge_store), ledger_url=params["ledger_url"])
    damaged = tmp_path / "damaged.snapshot"
    damaged.write_bytes(Path(entry.location).read_bytes()[:20_000])
    folder = open_edge(edge_store)
    with pytest.raises(BackupFailed, match=r"Edge cannot restore damaged\.snapshot"):
        be.restore_snapshot(folder, damaged, "documents__test-model__8", overwrite=True)
    assert [p.name for p in (edge_store / "shards").iterdir()] == ["documents__test-model__8"]  # nothing half-made
    assert EdgeStore(folder, "documents", "test-model", 8).count() == 160  # and the live one untouched
    close_edge(edge_store)

    message = restore(
        entry.id, overwrite=True, qdrant_url=None, qdrant_path=str(edge_store), ledger_url=params["ledger_url"]
    )
    assert message == "restored 240 points into documents__test-model__8"  # its alias still pointed at it
    assert "owls" in {doc for doc, _ in _search(edge_store, "owls")}


def test_a_damaged_snapshot_fails_verification(tmp_path: Path, edge_store: Path) -> None:
    folder = open_edge(edge_store)
    snapshot = tmp_path / "s.snapshot"
    count = be.snapshot_collection(folder, "documents__test-model__8", snapshot)
    assert be.verify_snapshot(folder, "documents__test-model__8", snapshot, count).startswith("240 points")
    with pytest.raises(BackupFailed, match="holds 240 points, the collection 241"):
        be.verify_snapshot(folder, "documents__test-model__8", snapshot, count + 1)
    snapshot.write_bytes(snapshot.read_bytes()[: snapshot.stat().st_size // 3])
    with pytest.raises(BackupFailed, match=r"Edge cannot restore s\.snapshot"):
        be.verify_snapshot(folder, "documents__test-model__8", snapshot, count)
    assert not list(tmp_path.glob(".verify-*"))  # the scratch shards are gone


def test_a_store_in_use_by_another_process_is_one_failed_backup(tmp_path: Path, edge_store: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(edge_store / "lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BackupFailed, match=r"1 of 1 backups failed: qdrant-edge/all: cannot list .* in use"):
            backup(**_params(tmp_path, edge_store))
    finally:
        holder.kill()
        holder.wait(timeout=10)


HOLD_LOCK = (  # another process with the store open: it holds the folder's flock
    "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX);"
    " print('held', flush=True); time.sleep(120)"
)


def test_a_replacement_cut_between_its_renames_keeps_the_old_shard(edge_store: Path) -> None:
    shards = edge_store / "shards"
    (shards / "documents__test-model__8").rename(shards / ".old-documents__test-model__8")  # the crash's state
    folder = open_edge(edge_store)
    assert folder.names() == ["documents__test-model__8"]
    assert EdgeStore(folder, "documents", "test-model", 8).count() == 240
