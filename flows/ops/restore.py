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

from flows.common.blocks import resolve_ledger_url, resolve_postgres_url, resolve_qdrant
from flows.common.db import Database
from flows.common.errors import ConfigError
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
    postgres_block: str | None = None,
    qdrant_block: str | None = None,
    ledger_block: str | None = None,
) -> str:
    """Put backup ``backup_id`` back into ``target`` (default: where it came from).

    ``postgres_block`` (PostgresLedger) wins over ``postgres_dsn``, ``qdrant_block`` (QdrantConnection) over
    ``qdrant_url``/``qdrant_path``, ``ledger_block`` (PostgresLedger) over ``ledger_url``; secrets come from
    the blocks or the node's environment, as in ``backup``. ``target`` must be a name the service allows."""
    dsn = resolve_postgres_url(postgres_block, postgres_dsn, "postgres_block") or postgres_dsn
    qdrant_url, qdrant_path, api_key = resolve_qdrant(qdrant_block, qdrant_url, qdrant_path)
    ledger = resolve_ledger_url(ledger_block, ledger_url)
    entry = checked_entry(Catalog(Database(ledger)), backup_id)
    path = Path(entry.location)
    name = target_name(entry.kind, target or entry.target)
    if entry.kind == "postgres":
        message = pg.restore_database(path, dsn, name, overwrite)
    elif entry.kind == "qdrant-export":
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
