"""Restore one backup from the catalog (pool ``oracle``, run by hand).

Reads the ``backup_catalog`` row, checks the file's sha256 against the catalog, then puts the backup back:
a PostgreSQL dump into a database (the original name unless ``target`` is given), a Qdrant export or
server snapshot into a collection. A live target (existing and non-empty) is refused unless
``overwrite=True``. Redis RDB and PostgreSQL globals need a stopped server or a superuser session, so for
those the run fails with the manual steps instead of guessing. Re-running with the same arguments is safe
once ``overwrite=True`` is given (the target is replaced again).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from qdrant_client import QdrantClient

from blocks.postgres import PostgresLedger
from blocks.qdrant import QdrantConnection
from flows.common.blocks import resolve_ledger_url, resolve_postgres_url, resolve_qdrant
from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.ops import backup_edge as be
from flows.ops import backup_postgres as pg
from flows.ops import backup_qdrant as bq
from flows.ops.backup_catalog import GOOD, BackupFailed, Catalog, CatalogEntry, sha256_file
from flows.ops.backup_names import collection_name, database_name


def checked_entry(catalog: Catalog, backup_id: str) -> CatalogEntry:
    """The catalog entry, refusing bad, pruned, missing or altered backups."""
    entry = catalog.get(backup_id)
    if entry is None:
        raise ConfigError(f"no backup {backup_id!r} in the catalog")
    if entry.status != GOOD:
        raise ConfigError(f"backup {backup_id} is marked {entry.status} ({entry.reason}): refusing to restore it")
    path = Path(entry.location)
    if entry.pruned_at or not path.exists():
        raise ConfigError(f"backup {backup_id} file {path} is gone (pruned {entry.pruned_at or 'no'})")
    if sha256_file(path) != entry.sha256:
        raise BackupFailed(f"backup {backup_id} file {path} does not match its sha256 in the catalog")
    return entry


def target_name(kind: str, name: str) -> str:
    """The name to restore into (``target``, else the catalog's), checked against what its service allows."""
    if kind == "postgres":
        return database_name(name, "target")
    if kind.startswith("qdrant"):
        return collection_name(name, "target")
    return name  # restored by hand: the name is only shown


@flow(name="restore")
def restore(
    backup_id: str,
    target: str | None = None,
    overwrite: bool = False,
    postgres_dsn: str = "postgresql://postgres@oracle:5432/postgres",
    qdrant_url: str | None = "http://starlord:6333",
    qdrant_path: str | None = None,
    ledger_url: str | None = None,
    postgres_block: PostgresLedger | str | None = None,
    qdrant_block: QdrantConnection | str | None = None,
    ledger_block: PostgresLedger | str | None = None,
) -> str:
    """Put backup ``backup_id`` back into ``target`` (default: where it came from).

    Secrets come from the blocks or the node's environment, as in ``backup``.

    Args:
        backup_id: Id of the backup in the catalog (the backup-report artifact, table backup_catalog).
        target: Database or collection to restore into, a name the service allows. Empty: the one it was
            taken from.
        overwrite: Replace the target when it exists and holds data; otherwise such a restore is refused.
        postgres_dsn: PostgreSQL server to restore into, as a superuser URL without password.
        qdrant_url: Qdrant server to restore into.
        qdrant_path: Folder of the embedded store to restore into instead of a server.
        ledger_url: Database holding the backup catalog (no password in it). Empty: the node's ledger.
        postgres_block: Saved PostgresLedger block of the server to restore into (UI: pick one; CLI,
            prefect.yaml: its name); wins over postgres_dsn.
        qdrant_block: Saved QdrantConnection block (a server); wins over qdrant_url and qdrant_path.
        ledger_block: Saved PostgresLedger block of the catalog's database; wins over ledger_url.
    """
    dsn = resolve_postgres_url(postgres_block, postgres_dsn, "postgres_block") or postgres_dsn
    qdrant = resolve_qdrant(qdrant_block, qdrant_url, qdrant_path)
    qdrant_url, qdrant_path, api_key = qdrant.url, qdrant.path, qdrant.api_key
    ledger = resolve_ledger_url(ledger_block, ledger_url)
    entry = checked_entry(Catalog(Database(ledger)), backup_id)
    path = Path(entry.location)
    name = target_name(entry.kind, target or entry.target)
    if entry.kind == "postgres":
        message = pg.restore_database(path, dsn, name, overwrite)
    elif entry.kind == "qdrant-edge":
        if not qdrant_path:
            raise ConfigError("restoring an embedded store's snapshot needs qdrant_path (the store's folder)")
        folder = be.open_store(Path(qdrant_path))
        try:
            message = be.restore_snapshot(folder, path, name, overwrite)
        finally:
            be.close_store(folder)
    elif entry.kind == "qdrant-export":
        if qdrant_path and be.is_edge_store(Path(qdrant_path)):
            raise ConfigError(
                f"{qdrant_path} is an embedded Edge store; a point export restores into a Qdrant server (qdrant_url)"
            )
        client = (
            QdrantClient(path=qdrant_path)
            if qdrant_path
            else QdrantClient(url=qdrant_url, api_key=api_key, check_compatibility=False)
        )
        try:
            message = f"restored {bq.restore_export(client, path, name, overwrite)} points into {name}"
        finally:
            client.close()
    elif entry.kind == "qdrant-snapshot":
        if not qdrant_url:
            raise ConfigError("restoring a Qdrant snapshot needs qdrant_url")
        message = bq.restore_snapshot(qdrant_url, name, path, api_key, overwrite)
    elif entry.kind == "postgres-globals":
        raise ConfigError(f"globals are restored by hand: psql -d postgres -f {path} (review the roles first)")
    elif entry.kind == "redis":
        raise ConfigError(
            f"Redis restores need the server stopped: stop redis, copy {path} to its dir as dump.rdb"
            " (appendonly off), start redis"
        )
    else:
        raise ConfigError(f"unknown backup kind {entry.kind!r}")
    get_run_logger().info(message)
    return message
