"""Which documents of a batch are copies by checksum, and of what (flows/rag/duplicates.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from flows.rag.duplicates import Original, content_key, originals, plan_duplicates
from flows.rag.ids import point_id
from flows.rag.sources.base import DocumentRef
from flows.rag.store_edge import EdgeStore, close_edge, open_edge
from flows.rag.store_server import ServerStore

SHA = "ab" * 32


def _ref(
    doc_id: str, version: str, name: str = "a.pdf", size: int | None = 10, mime: str = "application/pdf"
) -> DocumentRef:
    return DocumentRef(doc_id, name, f"Team/{name}", mime, version, size, None)


def test_only_checksum_versions_of_the_same_size_type_and_extension_are_the_same_content() -> None:
    assert content_key("md5:1f2e", 10, "application/pdf", "Report.PDF") == ("md5:1f2e", 10, "application/pdf", ".pdf")
    assert content_key(SHA, 10, "text/plain", "a.txt") == (SHA, 10, "text/plain", ".txt")
    for not_a_checksum in ("m:2026-01-01T00:00:01.000Z", "rev:r3", "stat:10:123", "unknown"):
        assert content_key(not_a_checksum, 10, "text/plain", "a.txt") is None
    # The same bytes as .txt and as .md parse differently: not interchangeable.
    assert content_key(SHA, 10, "text/plain", "a.txt") != content_key(SHA, 10, "text/plain", "a.md")


def test_a_batch_copies_what_is_indexed_and_fetches_one_of_several_new_copies() -> None:
    indexed = originals([("gdrive:x", "old", "md5:aa", 10, "application/pdf", "Old.pdf", 4, 1)])
    assert indexed == {("md5:aa", 10, "application/pdf", ".pdf"): Original("gdrive:x", "old", 4, 1)}
    refs = [
        _ref("copy-of-old", "md5:aa"),
        _ref("first", "md5:bb"),
        _ref("doc", "m:2026-01-01T00:00:01.000Z", "Notes", None, "application/vnd.google-apps.document"),
        _ref("second", "md5:bb"),
        _ref("other-type", "md5:bb", "a.txt", mime="text/plain"),
        _ref("third", "md5:bb"),
    ]
    plan = plan_duplicates(refs, indexed)
    assert [r.doc_id for r in plan.fetch] == ["first", "doc", "other-type"]
    assert [(r.doc_id, o.doc_id) for r, o in plan.copies] == [("copy-of-old", "old")]
    assert {leader: [r.doc_id for r in refs] for leader, refs in plan.followers.items()} == {
        "first": ["second", "third"]
    }


def test_the_first_indexed_original_of_a_content_is_used() -> None:
    rows = [
        ("s", "a", "md5:aa", 10, "application/pdf", "a.pdf", 2, 0),
        ("s", "b", "md5:aa", 10, "application/pdf", "b.pdf", 2, 0),
        ("s", "c", "m:2026", None, "application/vnd.google-apps.document", "c", 1, 0),  # not a checksum: ignored
    ]
    assert originals(rows) == {("md5:aa", 10, "application/pdf", ".pdf"): Original("s", "a", 2, 0)}


@pytest.mark.parametrize("engine", ["server", "edge"])
def test_a_documents_points_come_back_with_their_vectors_on_both_engines(engine: str, tmp_path: Path) -> None:
    """What a copy reads of its original (VectorStore.document_points): that document's points only."""
    store = (
        ServerStore(QdrantClient(location=":memory:"), "documents", "test-model", 4)
        if engine == "server"
        else EdgeStore(open_edge(tmp_path / "qdrant"), "documents", "test-model", 4)
    )
    try:
        store.ensure_collection()
        rows = {("S", "a"): [[1, 0, 0, 0], [0, 1, 0, 0]], ("S", "b"): [[0, 0, 1, 0]], ("T", "a"): [[0, 0, 0, 1]]}
        for (source, doc), vectors in rows.items():
            payloads = [{"source_id": source, "doc_id": doc, "chunk_index": i} for i in range(len(vectors))]
            ids = [point_id(source, doc, i) for i in range(len(vectors))]
            store.upsert(ids, np.asarray(vectors, dtype=np.float32), payloads)
        found = sorted(store.document_points("S", "a"), key=lambda point: point[0]["chunk_index"])
        assert [payload for payload, _ in found] == [
            {"source_id": "S", "doc_id": "a", "chunk_index": i} for i in range(2)
        ]
        np.testing.assert_allclose([vector for _, vector in found], rows[("S", "a")], atol=1e-6)
        assert store.document_points("S", "missing") == []
    finally:
        close_edge(tmp_path / "qdrant")
