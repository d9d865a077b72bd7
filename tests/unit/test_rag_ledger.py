"""The RAG ledger on both backends: the alias rows (served model, pending migration) and a batch's outcome totals."""

from __future__ import annotations

from flows.common.db import Database
from flows.rag.ledger import MIGRATIONS, DocumentOutcome, RagLedger
from flows.rag.sources.base import DocumentRef


def test_a_ledger_of_the_previous_schema_gains_the_migration_target_and_keeps_its_served_model(
    ledger_url: str,
) -> None:
    db = Database(ledger_url)
    db.ensure_schema("rag", MIGRATIONS[: MIGRATIONS.index("ALTER TABLE rag_aliases ADD COLUMN migration_target TEXT")])
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO rag_aliases (alias, embedding_model, updated_at) VALUES (%s, %s, %s)",
            ("documents", "m-old", "2026-01-01T00:00:00.000+00:00"),
        )
    ledger = RagLedger(db)
    assert (ledger.published_model("documents"), ledger.migration_target("documents")) == ("m-old", None)


def test_a_migration_target_lasts_until_the_alias_serves_it_or_it_is_cancelled(ledger_url: str) -> None:
    ledger = RagLedger(Database(ledger_url))
    ledger.set_migration_target("documents", "m-new")  # no alias published yet: nothing to migrate from
    assert ledger.migration_target("documents") is None

    ledger.record_published_model("documents", "m-old")
    ledger.set_migration_target("documents", "m-new")
    ledger.record_published_model("documents", "m-old")  # a sync on the old model publishes nothing new
    assert (ledger.published_model("documents"), ledger.migration_target("documents")) == ("m-old", "m-new")
    ledger.record_published_model("documents", "m-new")  # the swap
    assert (ledger.published_model("documents"), ledger.migration_target("documents")) == ("m-new", None)

    ledger.set_migration_target("documents", "m-next")
    ledger.set_migration_target("documents", None)  # an explicit run back to the served model
    assert ledger.migration_target("documents") is None
    assert ledger.migration_target("other") is None


def test_outcome_totals_count_only_the_asked_documents_of_the_source(ledger_url: str) -> None:
    ledger = RagLedger(Database(ledger_url))
    refs = [DocumentRef(f"d{i}", f"d{i}", f"d{i}", "text/plain", "v1", 1, None) for i in range(1203)]
    statuses = ["indexed", "skipped", "failed"]
    outcomes = [DocumentOutcome(r, statuses[i % 3], None, 2 if i % 3 == 0 else 0, 1 if i % 3 == 0 else 0)
                for i, r in enumerate(refs)]  # fmt: skip
    ledger.record_outcomes("src", outcomes, "m", "c")
    ledger.record_outcomes("other", outcomes[:3], "m", "c")
    asked = {r.doc_id for r in refs[:1201]}  # more ids than one IN list holds
    assert ledger.outcome_totals("src", asked) == {
        "indexed": 401, "skipped": 400, "failed": 400, "chunks": 802, "split_chunks": 401
    }  # fmt: skip
    assert ledger.outcome_totals("src", set()) == {"indexed": 0, "skipped": 0, "failed": 0, "chunks": 0,
                                                   "split_chunks": 0}  # fmt: skip
