"""Nightly backup of the cluster's data (pool ``oracle``).

PostgreSQL: ``pg_dump -Fc`` of each database plus globals, each verified by a full read and a scratch
restore with per-table row counts. Redis: an RDB copy via ``redis-cli --rdb``. Qdrant: server snapshots
(downloaded, sha256-checked); for the embedded store (Qdrant Edge) a shard snapshot per collection, verified by
restoring it with Edge (flows/ops/backup_edge.py); for a server with ``qdrant_mode="export"`` or an old
local-mode folder, a point export verified by a scratch restore. Files go to
``<backup_dir>/<kind>/<target>/<timestamp>-<id>.<ext>``; every attempt, good or bad, gets a row in the ledger's
``backup_catalog``; retention prunes old good backups per series.

A failed backup is marked bad, emits ``swarm.backup.failed``, never causes a good one to be pruned, and
makes the run fail with the reasons once everything else was attempted. Safe to re-run: each run adds new
timestamped backups.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from qdrant_client import QdrantClient

from blocks.postgres import PostgresLedger
from blocks.qdrant import QdrantConnection
from blocks.redis import RedisServer
from flows.common.blocks import resolve_block, resolve_ledger_url, resolve_postgres_url, resolve_qdrant
from flows.common.db import Database
from flows.common.events import BACKUP_FAILED, BACKUP_SUCCEEDED, backup_resource_id
from flows.common.redact import refuse_password
from flows.ops import backup_edge as be
from flows.ops import backup_postgres as pg
from flows.ops import backup_qdrant as bq
from flows.ops.backup_catalog import (
    BAD,
    GOOD,
    BackupFailed,
    Catalog,
    CatalogEntry,
    check_free_space,
    finish_file,
)
from flows.ops.backup_names import collection_name, database_name, path_component
from flows.ops.backup_redis import dump_rdb, redis_target, verify_rdb
from flows.ops.retention import BackupRecord, Policy, plan_retention

Work = Callable[[Path], str]  # writes the file, verifies it, returns a one-line summary


def attempt(kind: str, target: str, root: Path, ext: str, work: Work) -> CatalogEntry:
    """Run one backup into its own file; any failure becomes a bad entry with the reason, never a raise."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    entry = CatalogEntry(kind=kind, target=target, location="")
    # The id suffix keeps two attempts in the same second apart: a failed one deletes its own file only.
    # The target is a server's name (a database may be called "../../x"): encoded, it stays under root/kind.
    path = root / kind / path_component(target) / f"{stamp}-{entry.id[:8]}.{ext}"
    entry.location = str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entry.detail = work(path)
        finish_file(entry, path)
        entry.status, entry.verified = GOOD, True
    except Exception as exc:  # the reason is stored and reported; other backups go on
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        entry.reason = text if isinstance(exc, BackupFailed) else f"{type(exc).__name__}: {text}"
        path.unlink(missing_ok=True)  # a partial file is worthless and may be what filled the disk
    return entry


def postgres_work(dsn: str, dbname: str, root: Path, min_free: int) -> Work:
    def work(path: Path) -> str:
        check_free_space(root, pg.database_size(dsn, dbname), min_free)
        counts = pg.dump_database(dsn, dbname, path)
        return pg.verify_dump(path, dsn, counts)

    return work


def globals_work(dsn: str) -> Work:
    def work(path: Path) -> str:
        pg.dump_globals(dsn, path)
        return "roles and tablespaces"

    return work


def redis_work(url: str, root: Path, min_free: int, password: str | None = None) -> Work:
    def work(path: Path) -> str:
        check_free_space(root, 0, min_free)
        dump_rdb(url, path, password=password)
        return verify_rdb(path)

    return work


def qdrant_export_work(client: QdrantClient, name: str, root: Path, min_free: int) -> Work:
    def work(path: Path) -> str:
        check_free_space(root, 0, min_free)
        count = bq.export_collection(client, name, path)
        return bq.verify_export(client, path, count)

    return work


def edge_snapshot_work(folder: be.EdgeFolder, name: str, root: Path, min_free: int) -> Work:
    def work(path: Path) -> str:
        check_free_space(root, be.store_bytes(folder, name), min_free)
        count = be.snapshot_collection(folder, name, path)
        return be.verify_snapshot(folder, name, path, count)

    return work


def qdrant_snapshot_work(url: str, name: str, api_key: str | None, root: Path, min_free: int) -> Work:
    def work(path: Path) -> str:
        check_free_space(root, 0, min_free)
        sha = bq.snapshot_collection(url, name, path, api_key)
        return f"server snapshot, sha256 {sha[:12]}… matches the download"

    return work


# The work closures are not hashable inputs, and a backup must never be served from a cache anyway.
@task(task_run_name="backup-{kind}-{target}", cache_policy=NO_CACHE)
def run_backup(kind: str, target: str, root: Path, ext: str, work: Work, ledger_url: str) -> CatalogEntry:
    entry = attempt(kind, target, root, ext, work)
    Catalog(Database(ledger_url)).record(entry)
    if entry.status == BAD:
        get_run_logger().error("backup %s/%s failed: %s", kind, target, entry.reason)
    # Success events too: an automation can then alert when no good backup arrived for a day.
    emit_event(
        event=BACKUP_FAILED if entry.status == BAD else BACKUP_SUCCEEDED,
        resource={"prefect.resource.id": backup_resource_id(kind, target)},
        payload={"reason": entry.reason, "location": entry.location, "size_bytes": entry.size_bytes},
    )
    return entry


@task(task_run_name="prune-{kind}-{target}", cache_policy=NO_CACHE)
def prune_series(kind: str, target: str, policy: Policy, ledger_url: str) -> list[str]:
    catalog = Catalog(Database(ledger_url))
    series = catalog.series(kind, target)
    records = [BackupRecord(e.id, e.created, e.status == GOOD) for e in series]
    _keep, prune = plan_retention(records, policy, datetime.now(UTC))
    pruned = []
    for e in series:
        if e.id in prune:
            Path(e.location).unlink(missing_ok=True)
            catalog.mark_pruned(e.id)
            pruned.append(e.location)
    return pruned


def collection_names(client: QdrantClient) -> list[str]:
    return [c.name for c in client.get_collections().collections]


def qdrant_client(url: str | None, path: str | None, api_key: str | None) -> QdrantClient:
    return (
        QdrantClient(path=path)
        if path
        else QdrantClient(url=url, api_key=api_key, timeout=60, check_compatibility=False)
    )


@flow(name="backup")
def backup(
    backup_dir: str = "/srv/backups",
    postgres_dsn: str | None = "postgresql://postgres@oracle:5432/postgres",
    databases: list[str] | None = None,
    include_globals: bool = True,
    redis_url: str | None = "redis://oracle:6379/0",
    qdrant_url: str | None = "http://starlord:6333",
    qdrant_path: str | None = None,
    qdrant_collections: list[str] | None = None,
    qdrant_mode: Literal["snapshot", "export"] = "snapshot",
    keep_daily: int = 7,
    keep_weekly: int = 4,
    keep_monthly: int = 6,
    min_free_bytes: int = 2**30,
    ledger_url: str | None = None,
    postgres_block: PostgresLedger | str | None = None,
    redis_block: RedisServer | str | None = None,
    qdrant_block: QdrantConnection | str | None = None,
    ledger_block: PostgresLedger | str | None = None,
) -> dict[str, Any]:
    """Back up every configured store, verify each backup, apply retention; fail loudly if any failed.

    Secrets come from the blocks or the node's environment (PGPASSWORD or ~/.pgpass, REDISCLI_AUTH,
    SWARM_QDRANT_API_KEY), never from a parameter: a URL holding a password is refused.

    Args:
        backup_dir: Folder the backups are written to, one subfolder per kind and target.
        postgres_dsn: PostgreSQL server to dump, as a superuser URL without password. Empty: no PostgreSQL.
        databases: Databases to dump. Empty: every database of the server.
        include_globals: Also dump roles and tablespaces (pg_dumpall --globals-only).
        redis_url: Redis server to copy (RDB), without password. Empty: no Redis.
        qdrant_url: Qdrant server whose collections are backed up. Empty: no Qdrant server.
        qdrant_path: Folder of the embedded store to back up instead of a server (a snapshot per collection).
        qdrant_collections: Collections to back up. Empty: every collection.
        qdrant_mode: For a server: snapshot: the server's own snapshots; export: a point export verified by a
            scratch restore.
        keep_daily: Good backups kept per series, one per day, for this many days.
        keep_weekly: Good backups kept per series, one per week, for this many weeks.
        keep_monthly: Good backups kept per series, one per month, for this many months.
        min_free_bytes: Free space that must remain under backup_dir after a backup, else it is not made.
        ledger_url: Database holding the backup catalog (no password in it). Empty: the node's ledger.
        postgres_block: Saved PostgresLedger block of the server to dump (UI: pick one; CLI, prefect.yaml: its
            name); wins over postgres_dsn.
        redis_block: Saved RedisServer block; wins over redis_url.
        qdrant_block: Saved QdrantConnection block (a server); wins over qdrant_url and qdrant_path.
        ledger_block: Saved PostgresLedger block of the catalog's database; wins over ledger_url.
    """
    for db in databases or []:
        database_name(db, "databases")
    for name in qdrant_collections or []:
        collection_name(name, "qdrant_collections")
    policy = Policy(keep_daily, keep_weekly, keep_monthly)
    postgres_dsn = resolve_postgres_url(postgres_block, postgres_dsn, "postgres_block")
    refuse_password("redis_url", redis_url)
    redis_password = None
    if redis := resolve_block(RedisServer, redis_block, "redis_block"):
        redis_url, redis_password = redis.url, redis.password_value()
    qdrant = resolve_qdrant(qdrant_block, qdrant_url, qdrant_path)
    qdrant_url, qdrant_path, api_key = qdrant.url, qdrant.path, qdrant.api_key
    ledger = resolve_ledger_url(ledger_block, ledger_url)
    root = Path(backup_dir)
    root.mkdir(parents=True, exist_ok=True)
    entries: list[CatalogEntry] = []

    def go(kind: str, target: str, ext: str, work: Work) -> None:
        entries.append(run_backup(kind, target, root, ext, work, ledger))

    def listed(kind: str, lister: Callable[[], list[Any]]) -> list[Any]:
        """What to back up; a store that cannot even be listed is one failed backup, not a crash."""
        try:
            return lister()
        except Exception as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__

            def fail(_path: Path) -> str:
                raise BackupFailed(f"cannot list what to back up: {reason}")

            go(kind, "all", "none", fail)
            return []

    if postgres_dsn:
        for db in databases if databases is not None else listed("postgres", lambda: pg.list_databases(postgres_dsn)):
            go("postgres", db, "dump", postgres_work(postgres_dsn, db, root, min_free_bytes))
        if include_globals:
            go("postgres-globals", pg.base_database_of(postgres_dsn), "sql", globals_work(postgres_dsn))
    if redis_url:
        go("redis", redis_target(redis_url), "rdb", redis_work(redis_url, root, min_free_bytes, redis_password))
    if qdrant_path and be.is_edge_store(Path(qdrant_path)):
        for folder in listed("qdrant-edge", lambda: [be.open_store(Path(str(qdrant_path)))]):
            try:
                for name in qdrant_collections or folder.names():
                    go("qdrant-edge", name, "snapshot", edge_snapshot_work(folder, name, root, min_free_bytes))
            finally:
                be.close_store(folder)
    elif qdrant_path or qdrant_url:
        for client in listed("qdrant", lambda: [qdrant_client(qdrant_url, qdrant_path, api_key)]):
            try:
                names = qdrant_collections or listed("qdrant", partial(collection_names, client))
                for name in names:
                    if qdrant_path or qdrant_mode == "export":
                        work = qdrant_export_work(client, name, root, min_free_bytes)
                        go("qdrant-export", name, "jsonl.gz", work)
                    else:
                        work = qdrant_snapshot_work(str(qdrant_url), name, api_key, root, min_free_bytes)
                        go("qdrant-snapshot", name, "snapshot", work)
            finally:
                client.close()

    failed = [e for e in entries if e.status == BAD]
    failed_series = {(e.kind, e.target) for e in failed}
    pruned: list[str] = []
    # A series whose backup failed tonight is left untouched: its older good backups are all we have.
    for kind, target in sorted({(e.kind, e.target) for e in entries} - failed_series):
        pruned += prune_series(kind, target, policy, ledger)
    create_markdown_artifact(key="backup-report", markdown=report(entries, pruned))
    summary = {"good": len(entries) - len(failed), "failed": len(failed), "pruned": len(pruned)}
    if failed:
        reasons = "; ".join(f"{e.kind}/{e.target}: {e.reason}" for e in failed)
        raise BackupFailed(f"{len(failed)} of {len(entries)} backups failed: {reasons}")
    return summary


def report(entries: list[CatalogEntry], pruned: list[str]) -> str:
    lines = ["| what | status | size | sha256 | detail |", "|---|---|---|---|---|"]
    for e in entries:
        size = f"{(e.size_bytes or 0) / 2**20:.1f} MiB" if e.size_bytes is not None else "-"
        text = (e.detail if e.status == GOOD else e.reason) or ""
        lines.append(f"| {e.kind}/{e.target} | {e.status} | {size} | {(e.sha256 or '-')[:12]} | {text} |")
    lines.append(f"\nPruned {len(pruned)} old backups.")
    return "\n".join(lines)
