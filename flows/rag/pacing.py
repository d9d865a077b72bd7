"""The Drive budget ledger (units and egress bytes used per Google project and UTC day, in the RAG ledger's
database, so it survives runs and is shared by every node) and the step of rag-sync that paces a Drive plan.

A paced sync books the cost of the downloads it admits when it admits them, in the same transaction that reads
what the day has used (the row is locked), so two syncs of one project planning at once cannot both spend the
same rest of the budget. The Drive calls other than downloads (listing, the change feed) are added as made.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flows.common.db import Database, utc_now
from flows.rag.backfill import BackfillStatus, backfill_status, pace_plan
from flows.rag.config import RagConfig
from flows.rag.ledger import RagLedger
from flows.rag.plan import SyncPlan
from flows.rag.sources.base import Source
from flows.rag.sources.gdrive_api import DriveApi
from flows.rag.sources.gdrive_quota import Admission, Usage, utc_day

MIGRATIONS = [
    """CREATE TABLE rag_quota_days (
        project TEXT NOT NULL,
        day TEXT NOT NULL,
        units BIGINT NOT NULL DEFAULT 0,
        bytes BIGINT NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (project, day))""",
]

_ADD = """
INSERT INTO rag_quota_days (project, day, units, bytes, updated_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (project, day) DO UPDATE SET units = rag_quota_days.units + excluded.units,
    bytes = rag_quota_days.bytes + excluded.bytes, updated_at = excluded.updated_at
"""


class QuotaDays:
    """Drive usage per (Google project, UTC day)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema("rag_backfill", MIGRATIONS)

    def used(self, project: str, day: str) -> Usage:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT units, bytes FROM rag_quota_days WHERE project = %s AND day = %s", (project, day)
            ).fetchone()
        return Usage(int(row[0]), int(row[1])) if row else Usage()

    def add(self, project: str, day: str, usage: Usage) -> None:
        if usage.empty:
            return
        with self.db.connect() as conn:
            conn.execute(_ADD, (project, day, usage.units, usage.bytes, utc_now()))

    def reserve(self, project: str, day: str, decide: Callable[[Usage], Usage]) -> Usage:
        """``decide(used so far)`` → the cost to book, booked in the same transaction with the day's row locked
        (SQLite: the transaction is BEGIN IMMEDIATE, one writer at a time). Returns the usage before it."""
        with self.db.connect() as conn:
            conn.execute(_ADD, (project, day, 0, 0, utc_now()))  # the row exists from here on: it can be locked
            lock = " FOR UPDATE" if conn.dialect == "postgres" else ""
            row = conn.execute(
                f"SELECT units, bytes FROM rag_quota_days WHERE project = %s AND day = %s{lock}", (project, day)
            ).fetchone()
            assert row is not None
            before = Usage(int(row[0]), int(row[1]))
            cost = decide(before)
            conn.execute(_ADD, (project, day, cost.units, cost.bytes, utc_now()))
        return before


def clock() -> datetime:
    """The time the budget's day is read from (tests replace it to move a sync to another day)."""
    return datetime.now(UTC)


def drive_api(src: Source) -> DriveApi | None:
    """The Drive client of a Drive source (the one whose calls are charged), None for any other source."""
    api = getattr(src, "api", None)
    return api if isinstance(api, DriveApi) else None


def budget_of(config: RagConfig) -> Usage:
    return Usage(units=config.drive_daily_units, bytes=config.drive_daily_bytes)


def book_calls(db: Database, api: DriveApi, now: datetime) -> None:
    """Add the Drive calls made since the last booking (not downloads: booked when admitted) to today's usage."""
    QuotaDays(db).add(api.project, utc_day(now), api.meter.take_calls())


def pace_sync(
    ledger: RagLedger, config: RagConfig, src: Source, plan: SyncPlan, now: datetime
) -> tuple[SyncPlan, BackfillStatus | None]:
    """A Drive plan cut to today's budget, its admitted downloads booked; any other source's plan as it is."""
    api = drive_api(src)
    if api is None:
        return plan, None
    quota, day, budget = QuotaDays(ledger.db), utc_day(now), budget_of(config)
    quota.add(api.project, day, api.meter.take_calls())  # the listing's calls count against today's budget too
    result: dict[str, tuple[SyncPlan, Admission]] = {}

    def decide(used: Usage) -> Usage:
        result["plan"] = pace_plan(plan, config.backfill_order, budget - used, day_fresh=used.bytes == 0)
        return result["plan"][1].cost

    before = quota.reserve(api.project, day, decide)
    paced, admission = result["plan"]
    status = backfill_status(
        api.project, day, admission, ledger.done_totals(src.source_id), before + admission.cost, budget, now
    )
    return paced, status
