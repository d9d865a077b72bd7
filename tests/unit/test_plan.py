from __future__ import annotations

from dataclasses import replace

from flows.rag.ledger import LedgerEntry
from flows.rag.plan import known_documents, plan_sync
from flows.rag.sources.base import ChangeSet, DocumentRef

MODEL = "model-a"


def ref(doc_id: str, version: str = "v1", name: str | None = None, mtime_ns: int = 1) -> DocumentRef:
    return DocumentRef(doc_id, name or doc_id, doc_id, "text/plain", version, 10, None, mtime_ns)


def entry(doc_id: str, version: str = "v1", status: str = "indexed", model: str = MODEL) -> LedgerEntry:
    return LedgerEntry(doc_id, doc_id, doc_id, version, status, model, 10, 1, readers=("anyone",))


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


def test_a_sharing_change_or_readers_never_recorded_refresh_the_payload_only() -> None:
    entries = {"shared": entry("shared"), "older": replace(entry("older"), readers=None), "same": entry("same")}
    listing = [replace(ref("shared"), readers=("user:ann@x.com",)), ref("older"), ref("same")]
    plan = plan_sync(ChangeSet(listing, complete=True), entries, MODEL)
    assert [r.doc_id for r in plan.refreshed] == ["shared", "older"] and plan.unchanged == 1
    assert not plan.to_ingest


def test_an_unchanged_version_is_planned_again_when_the_listing_judges_it_otherwise() -> None:
    png, big = "unsupported file type .png (no parser)", "file is 3.0 MB, over the 1 MB limit (max_file_mb)"
    cases = {  # doc_id: (recorded status, recorded reason, the listing's skip reason now, planned again?)
        "now-readable.png": ("skipped", png, None, True),  # the parser reads PNG since
        "limit-raised.pdf": ("skipped", "file is 3.0 MB, over the 1 MB limit", None, True),  # older wording too
        "limit-lowered.pdf": ("indexed", None, big, True),
        "allowed-again.txt": ("skipped", "type text/plain is not in the MIME allow-list", None, True),
        "failed-now-too-big.pdf": ("failed", "cannot parse: corrupt PDF", big, True),
        "other-limit.pdf": ("skipped", big, big.replace(" 1 MB", " 2 MB"), True),
        "still-unreadable.png": ("skipped", png, png, False),
        "encrypted.pdf": ("skipped", "encrypted PDF (password protected)", None, False),  # found by reading it
        "still-corrupt.pdf": ("failed", "cannot parse: corrupt PDF", None, False),
    }
    entries = {
        doc_id: LedgerEntry(doc_id, doc_id, doc_id, "v1", status, MODEL, 10, 1, reason, readers=("anyone",))
        for doc_id, (status, reason, _, _) in cases.items()
    }
    listing = [
        DocumentRef(doc_id, doc_id, doc_id, None, "v1", 10, None, 1, skip_reason=skip)
        for doc_id, (_, _, skip, _) in cases.items()
    ]
    plan = plan_sync(ChangeSet(listing), entries, MODEL)
    assert {r.doc_id for r in plan.changed} == {doc_id for doc_id, case in cases.items() if case[3]}
    assert plan.unchanged == 3


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


def test_documents_the_listing_could_not_see_are_kept_not_removed() -> None:
    from flows.rag.sources.base import ListingProblem

    entries = {
        e.doc_id: e for e in [entry("gone"), entry("locked/a"), entry("locked/b/c"), entry("loop"), entry("lockedx")]
    }
    problems = [
        ListingProblem("locked", "cannot read folder: Permission denied", unseen=True),
        ListingProblem("loop", "cannot stat: Too many levels of symbolic links", unseen=True),
        ListingProblem("fifo", "a named pipe: not read", unseen=False),
    ]
    plan = plan_sync(ChangeSet([], complete=True, problems=problems), entries, MODEL)
    assert sorted(plan.removed) == ["gone", "lockedx"]  # a sibling sharing the prefix is not under the folder
    assert plan.kept_unseen == 3
    # An unreadable root: nothing at all was seen, so nothing is removed.
    root = [ListingProblem("", "cannot read folder: Permission denied", unseen=True)]
    plan = plan_sync(ChangeSet([], complete=True, problems=root), entries, MODEL)
    assert (plan.removed, plan.kept_unseen) == ([], len(entries))


def test_the_sync_model_is_explicit_else_the_served_one_else_the_nodes() -> None:
    from flows.rag.plan import choose_model

    assert choose_model("m-new", "m-old", "m-node", "documents").model == "m-new"  # an explicit change migrates
    assert choose_model(None, None, "m-node", "documents").model == "m-node"  # first sync
    assert choose_model(None, "m-node", "m-node", "documents").warning is None
    served = choose_model(None, "m-old", "m-node", "documents")
    assert served.model == "m-old"
    assert served.warning and "'m-node'" in served.warning and "'m-old'" in served.warning
    assert "embedding_model='m-node'" in served.warning and "\n" not in served.warning


def test_a_pending_migration_outranks_the_served_model_until_an_explicit_run_changes_it() -> None:
    from flows.rag.plan import choose_model

    started = choose_model("m-new", "m-old", "m-old", "documents")
    assert (started.model, started.migration, started.notice) == ("m-new", "m-new", None)
    assert choose_model("m-new", None, "m-old", "documents").migration is None  # a first sync migrates nothing
    assert choose_model("m-old", "m-old", "m-old", "documents").migration is None

    carried = choose_model(None, "m-old", "m-old", "documents", migrating="m-new")  # the next, scheduled sync
    assert (carried.model, carried.migration, carried.warning) == ("m-new", "m-new", None)
    assert carried.notice and "'m-old' to 'm-new'" in carried.notice and "embedding_model='m-old'" in carried.notice
    assert "\n" not in carried.notice

    cancelled = choose_model("m-old", "m-old", "m-node", "documents", migrating="m-new")
    assert (cancelled.model, cancelled.migration) == ("m-old", None)
    assert cancelled.notice == "cancelled the migration of 'documents' to 'm-new': it stays on 'm-old'"
    assert choose_model("m-other", "m-old", "m-old", "documents", migrating="m-new").migration == "m-other"
