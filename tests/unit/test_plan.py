from __future__ import annotations

from flows.rag.plan import LedgerEntry, known_documents, plan_sync
from flows.rag.sources.base import ChangeSet, DocumentRef

MODEL = "model-a"


def ref(doc_id: str, version: str = "v1", name: str | None = None, mtime_ns: int = 1) -> DocumentRef:
    return DocumentRef(doc_id, name or doc_id, doc_id, "text/plain", version, 10, None, mtime_ns)


def entry(doc_id: str, version: str = "v1", status: str = "indexed", model: str = MODEL) -> LedgerEntry:
    return LedgerEntry(doc_id, doc_id, doc_id, version, status, model, 10, 1)


def test_complete_listing_sorts_every_document() -> None:
    entries = {e.doc_id: e for e in [entry("same"), entry("edited"), entry("gone"), entry("moved")]}
    listing = [ref("same"), ref("edited", "v2"), ref("fresh"), ref("moved", name="new-name")]
    plan = plan_sync(ChangeSet(listing, complete=True), entries, MODEL)
    assert [r.doc_id for r in plan.new] == ["fresh"]
    assert [r.doc_id for r in plan.changed] == ["edited"]
    assert [r.doc_id for r in plan.refreshed] == ["moved"]
    assert plan.removed == ["gone"]
    assert plan.unchanged == 1
    assert [r.doc_id for r in plan.to_ingest] == ["fresh", "edited"]


def test_pending_documents_are_redone_after_a_crash() -> None:
    plan = plan_sync(ChangeSet([ref("a")]), {"a": entry("a", status="pending")}, MODEL)
    assert [r.doc_id for r in plan.changed] == ["a"]


def test_model_change_reembeds_indexed_documents_only() -> None:
    entries = {"a": entry("a", model="old"), "b": entry("b", status="failed", model="old")}
    plan = plan_sync(ChangeSet([ref("a"), ref("b")]), entries, MODEL)
    assert [r.doc_id for r in plan.changed] == ["a"]
    assert plan.unchanged == 1  # a failed file is retried when its content changes, not on every sync


def test_failed_document_with_new_version_is_retried() -> None:
    plan = plan_sync(ChangeSet([ref("a", "v2")]), {"a": entry("a", status="failed")}, MODEL)
    assert [r.doc_id for r in plan.changed] == ["a"]


def test_deleted_document_that_reappears_is_new_and_not_removed_twice() -> None:
    entries = {"a": entry("a", status="deleted"), "b": entry("b", status="deleted")}
    plan = plan_sync(ChangeSet([ref("a")], complete=True), entries, MODEL)
    assert [r.doc_id for r in plan.new] == ["a"]
    assert plan.removed == []


def test_incremental_feed_removes_only_what_it_reports() -> None:
    entries = {"a": entry("a"), "b": entry("b"), "c": entry("c")}
    changes = ChangeSet([ref("b", "v2")], removed=["a", "a", "unknown"], complete=False)
    plan = plan_sync(changes, entries, MODEL)
    assert plan.removed == ["a"]
    assert [r.doc_id for r in plan.changed] == ["b"]


def test_known_documents_hide_deleted_ones() -> None:
    known = known_documents({"a": entry("a"), "b": entry("b", status="deleted")})
    assert set(known) == {"a"}
    assert known["a"].version == "v1"
