"""The alias rows of the RAG ledger: the served model and a pending migration, on both backends."""

from __future__ import annotations

from flows.common.db import Database
from flows.rag.ledger import MIGRATIONS, RagLedger


def test_a_ledger_of_the_previous_schema_gains_the_migration_target_and_keeps_its_served_model(
    ledger_url: str,
) -> None:
    db = Database(ledger_url)
    db.ensure_schema("rag", MIGRATIONS[:-1])
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
