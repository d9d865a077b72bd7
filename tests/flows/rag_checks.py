"""What a user checks after a sync: the vector store and the ledger agree, and nothing is doubled."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from flows.common.db import Database


def all_points(client: QdrantClient, collection: str) -> list[dict[str, Any]]:
    points, offset = [], None
    while True:
        batch, offset = client.scroll(collection, limit=256, offset=offset, with_payload=True)
        points += [p.payload | {"id": str(p.id)} for p in batch]
        if offset is None:
            return points


def ledger_rows(ledger_url: str) -> dict[str, tuple[str, str | None, int, str]]:
    """doc_id -> (status, reason, chunk_count, version)"""
    with Database(ledger_url).connect() as conn:
        rows = conn.execute("SELECT doc_id, status, reason, chunk_count, version FROM rag_documents").fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def assert_consistent(client: QdrantClient, collection: str, ledger_url: str) -> list[dict[str, Any]]:
    """Points == the ledger's chunk total, one point per (document, chunk), only for indexed documents
    and only of their current version."""
    points = all_points(client, collection)
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
