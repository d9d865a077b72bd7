"""The research ledger: one row per query of every run (report, sources, cost, duration, or the failure), and the
tokens and cost the gateway reported for its calls, per model."""

from __future__ import annotations

import json

from flows.common.db import Database, utc_now
from flows.inference.usage import ledger_rows
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
    # Rows written before costs were measured hold characters/4 times fixed prices: kept, under the name of what
    # they are; new rows leave it NULL.
    "ALTER TABLE research_reports RENAME COLUMN cost_usd TO estimated_cost_usd",
    # The cost the gateway reported for all of the report's calls; NULL (unknown) when any call reported none.
    "ALTER TABLE research_reports ADD COLUMN cost_usd DOUBLE PRECISION",
    # As inference_job_usage: cost_usd is NULL unless every response of that model carried its cost.
    "CREATE TABLE research_report_usage ("
    " report_id TEXT NOT NULL REFERENCES research_reports (report_id),"
    " model TEXT NOT NULL,"
    " requests BIGINT NOT NULL,"
    " prompt_tokens BIGINT NOT NULL,"
    " completion_tokens BIGINT NOT NULL,"
    " priced_requests BIGINT NOT NULL,"
    " cost_usd DOUBLE PRECISION,"
    " PRIMARY KEY (report_id, model))",
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
        conn.executemany(
            "INSERT INTO research_report_usage (report_id, model, requests, prompt_tokens, completion_tokens,"
            " priced_requests, cost_usd) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(r.report_id, *row) for row in ledger_rows(r.usage)],
        )
