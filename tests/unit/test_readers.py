"""Drive permissions → readers, a reader's identity → the values a search may match, and readers in the ledger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.rag.ledger import MIGRATIONS, DocumentOutcome, RagLedger
from flows.rag.readers import allowed_readers, readers_of
from flows.rag.sources.base import DocumentRef
from testkit.gdrive_server import GDOC

NOW = datetime(2026, 3, 1, tzinfo=UTC)  # no permission here expires


def test_every_kind_of_permission_becomes_one_sorted_reader() -> None:
    permissions = [
        {"type": "user", "role": "owner", "emailAddress": "Ann@Example.com"},
        {"type": "user", "role": "commenter", "emailAddress": "ann@example.com"},  # the same reader twice
        {"type": "group", "role": "reader", "emailAddress": "eng@example.com"},
        {"type": "domain", "role": "reader", "domain": "Example.com"},
        {"type": "anyone", "role": "reader"},  # anyone with the link
        {"type": "user", "role": "writer", "emailAddress": "gone@example.com", "deleted": True},
        {"type": "user", "role": "reader"},  # no address: grants nobody
        {"type": "view", "role": "reader"},  # a type this does not know
    ]
    assert readers_of(permissions, NOW) == (
        "anyone",
        "domain:example.com",
        "group:eng@example.com",
        "user:ann@example.com",
    )
    assert readers_of([], NOW) == ()


def test_a_reader_sees_its_own_its_groups_its_domain_and_anyone() -> None:
    assert allowed_readers(" Bob@Example.com ", ["eng@example.com", "ops", ""]) == [
        "anyone",
        "domain:example.com",
        "user:bob@example.com",
        "group:eng@example.com",
        "group:ops@example.com",  # a bare group name is in the reader's domain
    ]
    assert allowed_readers("bob@example.com") == ["anyone", "domain:example.com", "user:bob@example.com"]


@pytest.mark.parametrize("who", ["bob", "@example.com", "bob@", "a@b@c"])
def test_a_reader_must_be_an_email_address(who: str) -> None:
    with pytest.raises(ConfigError, match="email address"):
        allowed_readers(who)


def test_what_a_reader_may_see_matches_the_documents_shared_with_it() -> None:
    shared = readers_of([{"type": "group", "emailAddress": "eng@example.com"}], NOW)
    private: tuple[str, ...] = ()
    bob = set(allowed_readers("bob@example.com", ["eng@example.com"]))
    eve = set(allowed_readers("eve@other.org"))
    assert bob & set(shared) and not eve & set(shared)
    assert not (bob | eve) & set(private)


def test_the_ledger_keeps_each_documents_readers_and_knows_rows_written_before_them(ledger_url: str) -> None:
    db = Database(ledger_url)
    db.ensure_schema("rag", MIGRATIONS[: MIGRATIONS.index("ALTER TABLE rag_documents ADD COLUMN readers TEXT")])
    with db.connect() as conn:  # a row as the previous release wrote it
        conn.execute(
            "INSERT INTO rag_documents (source_id, doc_id, name, path, version, status, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            ("S", "old", "old.txt", "old.txt", "v1", "indexed", "2026-01-01T00:00:00+00:00"),
        )
    ledger = RagLedger(db)  # the readers column arrives
    shared = DocumentRef("doc", "doc", "Team/doc", GDOC, "m:1", None, "2026-01-01T00:00:01.000Z", readers=("anyone",))
    ledger.record_outcomes("S", [DocumentOutcome(shared, "indexed", chunk_count=1)], "m", "c")
    entries = ledger.entries("S")
    assert (entries["doc"].readers, entries["doc"].modified) == (("anyone",), "2026-01-01T00:00:01.000Z")
    assert entries["old"].readers is None  # refreshed by the next sync (plan_sync), so its points get readers

    ledger.refresh_metadata("S", [replace(shared, readers=("group:eng@x.com", "user:ann@x.com"))])
    assert ledger.entries("S")["doc"].readers == ("group:eng@x.com", "user:ann@x.com")
