"""One small database layer for PostgreSQL (psycopg, production) and SQLite (embedded default).

SQL is written once with ``%s`` placeholders and portable types (TEXT, BIGINT, DOUBLE PRECISION,
timestamps as ISO-8601 UTC text), so both backends run the same statements and the same tests.
Each component owns its schema as an ordered list of migrations applied by :meth:`Database.ensure_schema`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from flows.common.errors import ConfigError, ServiceUnavailable
from flows.common.redact import has_password, misread_password, redact


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> tuple[Any, ...] | None: ...
    def fetchall(self) -> list[tuple[Any, ...]]: ...


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Connection:
    """A connection with one ``execute`` for both backends."""

    def __init__(self, raw: Any, dialect: str) -> None:
        self._raw = raw
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.dialect == "sqlite":
            sql = sql.replace("%s", "?")
        return self._raw.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.dialect == "sqlite":
            self._raw.executemany(sql.replace("%s", "?"), [tuple(r) for r in rows])
        else:
            with self._raw.cursor() as cur:
                cur.executemany(sql, [tuple(r) for r in rows])


def _is_operational(exc: BaseException) -> bool:
    """Whether ``exc`` is psycopg's: the server went away (psycopg is loaded: the connection that raised is its)."""
    import psycopg

    return isinstance(exc, psycopg.OperationalError)


class Database:
    """A database URL turned into short transactions.

    ``postgresql://...`` uses psycopg; ``sqlite:///path/to/file.db`` uses the standard library.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgres"
            if misread_password(url):
                raise ConfigError(
                    f"ledger URL {redact(url)!r}: its password holds a raw '@' or '/', which PostgreSQL reads as"
                    " part of the host: percent-encode them (%40, %2F)"
                )
        elif url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self._sqlite_path = Path(url.removeprefix("sqlite:///"))
        else:
            raise ConfigError(f"ledger URL {redact(url)!r} is not supported: use postgresql://... or sqlite:///path")
        self._schema_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Database({redact(self.url)!r})"

    def _open(self) -> Any:
        if self.dialect == "postgres":
            import psycopg  # only where the ledger is PostgreSQL: the embedded default never pays its import

            try:
                return psycopg.connect(self.url, connect_timeout=5)
            except psycopg.Error as exc:
                text = str(exc).strip()
                reason = redact(text.splitlines()[-1] if text else type(exc).__name__, self.url)
                if isinstance(exc, psycopg.OperationalError):
                    raise ServiceUnavailable(f"cannot reach the ledger at {redact(self.url)}: {reason}") from exc
                # libpq could not parse the URL: its reason quotes the part it choked on, maybe a password's
                detail = "" if has_password(self.url) else f": {reason}"
                raise ConfigError(f"ledger URL {redact(self.url)!r} is not a valid connection string{detail}") from exc
        try:
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            raw = sqlite3.connect(self._sqlite_path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ServiceUnavailable(f"cannot open the ledger at {self._sqlite_path}: {exc}") from exc
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
        return raw

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        raw = self._open()
        try:
            if self.dialect == "sqlite":
                raw.execute("BEGIN IMMEDIATE")
            yield Connection(raw, self.dialect)
            if self.dialect == "sqlite":
                raw.execute("COMMIT")
            else:
                raw.commit()
        except BaseException as exc:
            if self.dialect == "sqlite":
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
            elif _is_operational(exc):
                # The server went away mid-transaction (dropped, restarted, connection killed): it rolled back.
                text = str(exc).strip()
                reason = redact(text.splitlines()[-1] if text else type(exc).__name__, self.url)
                raise ServiceUnavailable(f"lost the ledger at {redact(self.url)}: {reason}") from exc
            else:
                raw.rollback()
            raise
        finally:
            raw.close()

    def ensure_schema(self, component: str, migrations: Sequence[str]) -> None:
        """Apply the component's migrations not applied yet, in order; safe to call on every start.

        ``migrations`` only ever grows: never edit an applied entry, append a new one.
        """
        with self._schema_lock, self.connect() as conn:
            if self.dialect == "postgres":
                # Serialise concurrent starts (several workers) on the same database.
                conn.execute("SELECT pg_advisory_xact_lock(4242)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions ("
                " component TEXT PRIMARY KEY, version INTEGER NOT NULL, updated_at TEXT NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_versions WHERE component = %s", (component,)).fetchone()
            current = row[0] if row else 0
            for statement in migrations[current:]:
                conn.execute(statement)
            if len(migrations) > current:
                conn.execute(
                    "INSERT INTO schema_versions (component, version, updated_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (component) DO UPDATE SET version = excluded.version,"
                    " updated_at = excluded.updated_at",
                    (component, len(migrations), utc_now()),
                )
