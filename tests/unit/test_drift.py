"""The ledger against the store's points: every kind of drift, and what is not drift."""

from __future__ import annotations

from flows.rag.drift import MISSING, UNKNOWN, WRONG_COUNT, WRONG_VERSION, find_drift, tally_points
from flows.rag.ledger import LedgerDocument

COLLECTION = "documents__m__384"
SRC = "local:/docs"


def doc(
    doc_id: str, chunks: int = 2, version: str = "v1", status: str = "indexed", collection: str = COLLECTION
) -> LedgerDocument:
    return LedgerDocument(SRC, doc_id, f"dir/{doc_id}", status, version, chunks, collection)


def points(doc_id: str, *versions: str, source: str = SRC) -> list[dict[str, str]]:
    return [{"source_id": source, "doc_id": doc_id, "version": v} for v in versions]


def kinds(documents: list[LedgerDocument], payloads: list[dict[str, str]]) -> dict[str, str]:
    return {d.doc_id: d.kind for d in find_drift(documents, tally_points(payloads), COLLECTION)}


def test_a_store_that_matches_the_ledger_has_no_drift() -> None:
    documents = [doc("a.md"), doc("b.md", chunks=1), doc("empty.md", chunks=0)]
    assert kinds(documents, points("a.md", "v1", "v1") + points("b.md", "v1")) == {}


def test_an_empty_store_misses_every_indexed_document_with_chunks() -> None:
    drift = find_drift([doc("a.md"), doc("b.md", chunks=3), doc("empty.md", chunks=0)], {}, COLLECTION)
    assert [(d.kind, d.doc_id, d.path, d.ledger, d.store) for d in drift] == [
        (MISSING, "a.md", "dir/a.md", "2 chunks of v1", "no points"),
        (MISSING, "b.md", "dir/b.md", "3 chunks of v1", "no points"),
    ]


def test_wrong_count_and_wrong_version_are_told_apart() -> None:
    documents = [doc("short.md", chunks=3), doc("long.md", chunks=1), doc("old.md"), doc("mixed.md")]
    stored = points("short.md", "v1", "v1") + points("long.md", "v1", "v1") + points("old.md", "v0", "v0")
    stored += points("mixed.md", "v1", "v0")
    found = {d.doc_id: d for d in find_drift(documents, tally_points(stored), COLLECTION)}
    assert {k: d.kind for k, d in found.items()} == {
        "short.md": WRONG_COUNT, "long.md": WRONG_COUNT, "old.md": WRONG_VERSION, "mixed.md": WRONG_VERSION,
    }  # fmt: skip
    assert found["short.md"].store == "2 points of v1"
    assert found["mixed.md"].store == "2 points of v0 (1), v1 (1)"


def test_points_the_ledger_does_not_hold_as_indexed_are_strays() -> None:
    documents = [doc("gone.md", status="deleted"), doc("bad.pdf", status="failed")]
    stored = (
        points("gone.md", "v1")
        + points("bad.pdf", "v1")
        + points("x.md", "v9")
        + points("a.md", "v1", source="gdrive:f")
    )
    found = {(d.source_id, d.doc_id): d for d in find_drift(documents, tally_points(stored), COLLECTION)}
    assert {k: d.kind for k, d in found.items()} == {
        (SRC, "gone.md"): UNKNOWN, (SRC, "bad.pdf"): UNKNOWN, (SRC, "x.md"): UNKNOWN, ("gdrive:f", "a.md"): UNKNOWN,
    }  # fmt: skip
    assert found[(SRC, "gone.md")].ledger == "deleted" and found[(SRC, "x.md")].ledger == "no such document"


def test_pending_documents_and_documents_on_another_collection_are_left_to_the_next_sync() -> None:
    documents = [doc("busy.md", status="pending"), doc("other.md", collection="documents__old__384")]
    assert kinds(documents, points("busy.md", "v1")) == {}
