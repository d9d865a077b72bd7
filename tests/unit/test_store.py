"""The vector store's stale-point cleanup, on an embedded Qdrant."""

from __future__ import annotations

import numpy as np

from flows.rag.ids import point_id
from flows.rag.store import VectorStore, open_qdrant


def _write(store: VectorStore, source: str, doc: str, version: str, chunks: int) -> None:
    ids = [point_id(source, doc, i) for i in range(chunks)]
    payloads = [{"source_id": source, "doc_id": doc, "version": version, "text": f"{doc} {i}"} for i in range(chunks)]
    store.upsert(ids, np.ones((chunks, 4), dtype=np.float32), payloads)


def test_delete_stale_keeps_each_documents_given_version_only(tmp_path) -> None:
    store = VectorStore(open_qdrant(None, None, tmp_path / "qdrant"), "documents", "test-model", 4)
    store.ensure_collection()
    for doc in ("a", "b", "c"):
        _write(store, "S", doc, "v1", 3)
    _write(store, "T", "a", "v1", 3)  # same document id in another source
    _write(store, "S", "a", "v2", 2)  # a's new version is shorter: its third v1 point is stale

    store.delete_stale("S", {"a": "v2", "b": "v1"})

    points, _ = store.client.scroll(store.collection, limit=100, with_payload=True)
    left = sorted((p.payload["source_id"], p.payload["doc_id"], p.payload["version"]) for p in points)
    assert left == sorted(
        [("S", "a", "v2")] * 2 + [("S", "b", "v1")] * 3 + [("S", "c", "v1")] * 3 + [("T", "a", "v1")] * 3
    )
    store.delete_stale("S", {})  # nothing to do: must not delete anything
    assert store.count() == len(left)
