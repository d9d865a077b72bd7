"""Inference jobs in the ledger: one row per run of the batch-inference flow, and its tokens and cost per model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flows.common.db import Database, utc_now
from flows.inference.usage import ModelUsage, ledger_rows

MIGRATIONS = [
    "CREATE TABLE inference_jobs ("
    " job_id TEXT PRIMARY KEY,"
    " input_path TEXT NOT NULL,"
    " output_path TEXT NOT NULL,"
    " engine TEXT NOT NULL,"
    " endpoint TEXT,"
    " status TEXT NOT NULL,"
    " total BIGINT NOT NULL DEFAULT 0,"
    " ok BIGINT NOT NULL DEFAULT 0,"
    " failed BIGINT NOT NULL DEFAULT 0,"
    " skipped BIGINT NOT NULL DEFAULT 0,"
    " tokens BIGINT NOT NULL DEFAULT 0,"
    " started_at TEXT NOT NULL,"
    " finished_at TEXT,"
    " duration_s DOUBLE PRECISION,"
    " error TEXT,"
    " details TEXT)",
    "CREATE INDEX inference_jobs_output ON inference_jobs (output_path, started_at)",
    # cost_usd is NULL unless every response of that model in the job reported its cost (LiteLLM does, vLLM not).
    "CREATE TABLE inference_job_usage ("
    " job_id TEXT NOT NULL REFERENCES inference_jobs (job_id),"
    " model TEXT NOT NULL,"
    " requests BIGINT NOT NULL,"
    " prompt_tokens BIGINT NOT NULL,"
    " completion_tokens BIGINT NOT NULL,"
    " priced_requests BIGINT NOT NULL,"
    " cost_usd DOUBLE PRECISION,"
    " PRIMARY KEY (job_id, model))",
]


def open_ledger(url: str) -> Database:
    db = Database(url)
    db.ensure_schema("inference", MIGRATIONS)
    return db


def start_job(db: Database, job_id: str, input_path: str, output_path: str, engine: str) -> None:
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO inference_jobs (job_id, input_path, output_path, engine, status, started_at)"
            " VALUES (%s, %s, %s, %s, 'running', %s)",
            (job_id, input_path, output_path, engine, utc_now()),
        )


def finish_job(
    db: Database,
    job_id: str,
    status: str,
    stats: dict[str, Any],
    endpoint: str | None = None,
    error: str | None = None,
    usage: Mapping[str, ModelUsage] | None = None,
) -> None:
    """The job's end: its counts, and the tokens and cost per model of what it sent."""
    with db.connect() as conn:
        conn.execute(
            "UPDATE inference_jobs SET status = %s, endpoint = COALESCE(%s, endpoint), total = %s, ok = %s,"
            " failed = %s, skipped = %s, tokens = %s, finished_at = %s, duration_s = %s, error = %s,"
            " details = %s WHERE job_id = %s",
            (
                status,
                endpoint,
                int(stats.get("total", 0)),
                int(stats.get("ok", 0)),
                int(stats.get("failed", 0)),
                int(stats.get("skipped", 0)),
                int(stats.get("tokens", 0)),
                utc_now(),
                float(stats.get("elapsed_s", 0.0)),
                error,
                json.dumps(stats, default=str),
                job_id,
            ),
        )
        conn.executemany(
            "INSERT INTO inference_job_usage (job_id, model, requests, prompt_tokens, completion_tokens,"
            " priced_requests, cost_usd) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(job_id, *row) for row in ledger_rows(usage or {})],
        )
