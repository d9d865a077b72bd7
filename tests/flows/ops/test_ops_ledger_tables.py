"""The ops tables on both ledger backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from flows.common.db import Database
from flows.ops.backup_catalog import BAD, GOOD, Catalog, CatalogEntry
from flows.ops.health_state import ServiceState, load_state, save_state


def test_health_state_round_trip_and_upsert(ledger_url: str) -> None:
    db = Database(ledger_url)
    assert load_state(db) == {}
    save_state(db, {"oracle.vault": ServiceState("down", 2, True, "t1"), "oracle.pg": ServiceState("up")})
    save_state(db, {"oracle.vault": ServiceState("up", 0, False, "t2")})
    assert load_state(db) == {
        "oracle.vault": ServiceState("up", 0, False, "t2"),
        "oracle.pg": ServiceState("up", 0, False, ""),
    }


def test_catalog_series_get_and_prune(ledger_url: str) -> None:
    catalog = Catalog(Database(ledger_url))
    old = CatalogEntry("postgres", "app", "/b/1", GOOD, True, 10, "ab", created_at="2026-11-01T02:30:00.000+00:00")
    new = CatalogEntry(
        "postgres", "app", "/b/2", BAD, reason="pg_dump failed: x", created_at="2026-11-02T02:30:00.000+00:00"
    )
    other = CatalogEntry("redis", "r", "/b/3", GOOD, True, 5 * 2**40, "cd")  # sizes beyond 32 bits
    for e in (new, old, other):
        catalog.record(e)
    assert [e.id for e in catalog.series("postgres", "app")] == [old.id, new.id]
    assert catalog.get(other.id) == other
    catalog.mark_pruned(old.id)
    assert [e.id for e in catalog.series("postgres", "app")] == [new.id]
    pruned = catalog.get(old.id)
    assert pruned is not None and pruned.pruned_at is not None and pruned.verified
    Catalog(Database(ledger_url))  # the schema step is idempotent
