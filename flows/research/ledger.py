"""The research ledger: one row per query of every run (report, sources, cost, duration, or the failure)."""

from __future__ import annotations

import json

from flows.common.db import Database, utc_now
from flows.research.runs import QueryResult

MIGRATIONS = [
    "CREATE TABLE research_reports ("
    " report_id TEXT PRIMARY KEY,"
    " run_id TEXT NOT NULL,"
    " query TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " report TEXT,"
    " sources TEXT,"
    " cost_usd DOUBLE PRECISION,"
    " duration_s DOUBLE PRECISION,"
    " report_path TEXT,"
    " error TEXT,"
    " created_at TEXT NOT NULL)",
    "CREATE INDEX research_reports_run ON research_reports (run_id)",
]


def open_ledger(url: str) -> Database:
    db = Database(url)
    db.ensure_schema("research", MIGRATIONS)
    return db


def record_result(db: Database, run_id: str, r: QueryResult) -> None:
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO research_reports (report_id, run_id, query, status, report, sources, cost_usd,"
            " duration_s, report_path, error, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                r.report_id,
                run_id,
                r.query,
                "completed" if r.ok else "failed",
                r.report or None,
                json.dumps(r.sources),
                r.cost_usd,
                r.duration_s,
                r.report_path,
                r.error,
                utc_now(),
            ),
        )
