"""The Drive budget ledger, in the RAG ledger's database so that it survives runs and every node shares it: the
quota units and egress bytes used per Google project and UTC day, and what each admitted download was booked at.

A paced sync books a download's estimated cost when it admits the document (flows/rag/pacing.py): its size, or for
a Google-native export, whose size nobody knows before it is made, an assumed one. The download itself then trues
that day up (:meth:`QuotaDays.settle`): it adds what it really spent less what was booked for it, so an export
larger or smaller than assumed, a retried chunk or a download that failed midway is charged what it cost, and the
next admission reads the real figure. A document booked at nothing (a copy by checksum, flows/rag/duplicates.py)
that is downloaded after all is charged in full on the day it was downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, timedelta

from flows.common.db import Database, utc_now
from flows.rag.sources.gdrive_quota import Usage

MIGRATIONS = [
    """CREATE TABLE rag_quota_days (
        project TEXT NOT NULL,
        day TEXT NOT NULL,
        units BIGINT NOT NULL DEFAULT 0,
        bytes BIGINT NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (project, day))""",
    # One row per admitted download not yet made: the day and the cost it was booked at.
    """CREATE TABLE rag_quota_booked (
        project TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        day TEXT NOT NULL,
        units BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        PRIMARY KEY (project, doc_id))""",
]

# A booking no download settled within this many days (its batch crashed, or its document went): dropped, the
# estimate stays on its day.
BOOKING_DAYS = 7

_ADD = """
INSERT INTO rag_quota_days (project, day, units, bytes, updated_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (project, day) DO UPDATE SET units = rag_quota_days.units + excluded.units,
    bytes = rag_quota_days.bytes + excluded.bytes, updated_at = excluded.updated_at
"""
# A document admitted again (its earlier download never came) is booked anew; the earlier day keeps its estimate.
_BOOK = """
INSERT INTO rag_quota_booked (project, doc_id, day, units, bytes) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (project, doc_id) DO UPDATE SET day = excluded.day, units = excluded.units, bytes = excluded.bytes
"""


class QuotaDays:
    """Drive usage per (Google project, UTC day), and the bookings of admitted downloads."""

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
        """``usage`` added to the day's (either part may be negative: a true-up)."""
        if usage.empty:
            return
        with self.db.connect() as conn:
            conn.execute(_ADD, (project, day, usage.units, usage.bytes, utc_now()))

    def reserve(self, project: str, day: str, decide: Callable[[Usage], Mapping[str, Usage]]) -> Usage:
        """``decide(used so far)`` → the downloads to book, by document id, booked in the same transaction with
        the day's row locked (SQLite: the transaction is BEGIN IMMEDIATE, one writer at a time), so two syncs of one
        project planning at once cannot both spend the same rest of the budget. Returns the usage before it."""
        stale = (date.fromisoformat(day) - timedelta(days=BOOKING_DAYS)).isoformat()
        with self.db.connect() as conn:
            conn.execute(_ADD, (project, day, 0, 0, utc_now()))  # the row exists from here on: it can be locked
            lock = " FOR UPDATE" if conn.dialect == "postgres" else ""
            row = conn.execute(
                f"SELECT units, bytes FROM rag_quota_days WHERE project = %s AND day = %s{lock}", (project, day)
            ).fetchone()
            assert row is not None
            before = Usage(int(row[0]), int(row[1]))
            bookings = decide(before)
            cost = sum(bookings.values(), Usage())
            conn.execute(_ADD, (project, day, cost.units, cost.bytes, utc_now()))
            conn.executemany(_BOOK, [(project, doc_id, day, u.units, u.bytes) for doc_id, u in bookings.items()])
            conn.execute("DELETE FROM rag_quota_booked WHERE project = %s AND day < %s", (project, stale))
        return before

    def settle(self, project: str, doc_id: str, spent: Usage, day: str) -> None:
        """A download of ``doc_id`` that spent ``spent``, made on ``day``: the day it was booked on gets the
        difference (positive or negative) and the booking is done; a download nobody booked is charged in full."""
        with self.db.connect() as conn:
            lock = " FOR UPDATE" if conn.dialect == "postgres" else ""
            row = conn.execute(
                f"SELECT day, units, bytes FROM rag_quota_booked WHERE project = %s AND doc_id = %s{lock}",
                (project, doc_id),
            ).fetchone()
            if row is not None:
                conn.execute("DELETE FROM rag_quota_booked WHERE project = %s AND doc_id = %s", (project, doc_id))
                day, spent = str(row[0]), spent - Usage(int(row[1]), int(row[2]))
            if not spent.empty:
                conn.execute(_ADD, (project, day, spent.units, spent.bytes, utc_now()))
