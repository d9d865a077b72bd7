"""PostgreSQL backups: ``pg_dump -Fc`` per database plus ``pg_dumpall --globals-only``, verified, restorable.

The dump runs on a snapshot exported from a REPEATABLE READ transaction that also counts each table's rows,
so the counts the verification compares against are exactly what the dump contains, even while the
database keeps taking writes. Verification: ``pg_restore --list`` (the table of contents), a full read of
every data block, and a restore into a scratch database whose per-table row counts must match; the scratch
database is dropped afterwards whatever happens.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flows.ops.backup_catalog import BackupFailed, run_tool

COUNT_TABLES = (
    "SELECT schemaname, tablename FROM pg_tables"
    " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
)


def dsn_for(base_dsn: str, dbname: str) -> str:
    return make_conninfo(base_dsn, dbname=dbname)


def tool_conninfo(dsn: str) -> tuple[str, dict[str, str] | None]:
    """``dsn`` for a client tool's command line without its password, and the environment that carries the
    password instead (``PGPASSWORD``): a command line is readable by every user of the node (``ps``)."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    if not password:
        return dsn, None
    return make_conninfo(**params), {**os.environ, "PGPASSWORD": str(password)}


def list_databases(base_dsn: str) -> list[str]:
    with psycopg.connect(base_dsn, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn"
            " AND datname NOT LIKE 'swarm\\_scratch\\_%' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def database_size(base_dsn: str, dbname: str) -> int:
    with psycopg.connect(base_dsn, connect_timeout=10) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()
    return int(row[0]) if row else 0


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    counts = {}
    for schema, table in conn.execute(COUNT_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[f"{schema}.{table}"] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
    return counts


def dump_database(base_dsn: str, dbname: str, dest: Path) -> dict[str, int]:
    """Dump one database to ``dest``; returns the row count of each table as dumped."""
    dsn = dsn_for(base_dsn, dbname)
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            counts = table_counts(conn)
            # The transaction stays open while pg_dump reads the same snapshot.
            conninfo, env = tool_conninfo(dsn)
            args = ["pg_dump", "-Fc", f"--snapshot={snapshot}", "-f", str(dest), "--dbname", conninfo]
            run_tool(args, "pg_dump", env=env)
    except psycopg.Error as exc:
        raise BackupFailed(f"cannot read database {dbname}: {str(exc).strip().splitlines()[-1]}") from exc
    return counts


def dump_globals(base_dsn: str, dest: Path) -> None:
    conninfo, env = tool_conninfo(base_dsn)
    run_tool(["pg_dumpall", "--globals-only", "-f", str(dest), "--dbname", conninfo], "pg_dumpall", env=env)
    verify_globals(dest)


def verify_globals(path: Path) -> None:
    text = path.read_text(errors="replace")
    if "PostgreSQL database cluster dump complete" not in text:
        raise BackupFailed(f"globals dump {path.name} is incomplete (no completion marker)")


def _admin(base_dsn: str) -> psycopg.Connection:
    return psycopg.connect(base_dsn, autocommit=True, connect_timeout=10)


def database_exists(base_dsn: str, dbname: str) -> bool:
    with _admin(base_dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def database_is_empty(base_dsn: str, dbname: str) -> bool:
    with psycopg.connect(dsn_for(base_dsn, dbname), connect_timeout=10) as conn:
        return not table_counts(conn)


def create_database(base_dsn: str, dbname: str) -> None:
    with _admin(base_dsn) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def drop_database(base_dsn: str, dbname: str) -> None:
    with _admin(base_dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def pg_restore_into(path: Path, base_dsn: str, dbname: str) -> None:
    conninfo, env = tool_conninfo(dsn_for(base_dsn, dbname))
    run_tool(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--dbname", conninfo, str(path)],
        f"pg_restore into {dbname}",
        env=env,
    )


def verify_dump(path: Path, base_dsn: str, expected: dict[str, int]) -> str:
    """Full read and a scratch restore whose row counts must equal ``expected``; returns a summary."""
    toc = run_tool(["pg_restore", "--list", str(path)], "pg_restore --list")
    entries = sum(1 for ln in toc.splitlines() if ln and not ln.startswith(";"))
    run_tool(["pg_restore", "--file", "/dev/null", str(path)], "full read of the dump")
    scratch = f"swarm_scratch_{uuid.uuid4().hex[:12]}"
    create_database(base_dsn, scratch)
    try:
        pg_restore_into(path, base_dsn, scratch)
        with psycopg.connect(dsn_for(base_dsn, scratch), connect_timeout=10) as conn:
            restored = table_counts(conn)
    finally:
        drop_database(base_dsn, scratch)
    if restored != expected:
        diffs = [
            f"{t}: {expected.get(t, 'absent')} -> {restored.get(t, 'absent')}"
            for t in sorted(set(expected) | set(restored))
            if expected.get(t) != restored.get(t)
        ]
        raise BackupFailed("restored row counts differ: " + "; ".join(diffs[:5]))
    return f"{entries} TOC entries, {len(expected)} tables, {sum(expected.values())} rows verified"


def restore_database(path: Path, base_dsn: str, dbname: str, overwrite: bool = False) -> str:
    """Put a dump back as ``dbname``; a live (existing, non-empty) database is only replaced on request.

    The dump is restored into a scratch database first and renamed into place only once that succeeded,
    so a restore that fails halfway never leaves the target dropped.
    """
    exists = database_exists(base_dsn, dbname)
    if exists and not overwrite and not database_is_empty(base_dsn, dbname):
        raise BackupFailed(
            f"database {dbname} exists and holds tables: pass overwrite=True to replace it, or restore"
            " under another name"
        )
    staging = f"swarm_scratch_{uuid.uuid4().hex[:12]}"
    create_database(base_dsn, staging)
    try:
        pg_restore_into(path, base_dsn, staging)
        with psycopg.connect(dsn_for(base_dsn, staging), connect_timeout=10) as conn:
            counts = table_counts(conn)
        if exists:
            drop_database(base_dsn, dbname)
        with _admin(base_dsn) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(dbname))
            )
    except BaseException:
        drop_database(base_dsn, staging)
        raise
    return f"restored {len(counts)} tables, {sum(counts.values())} rows into {dbname}"


def base_database_of(dsn: str) -> str:
    return conninfo_to_dict(dsn).get("dbname") or "postgres"
