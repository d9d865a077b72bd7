"""The RAG ledger: every document's state, sync cursors and runs, in PostgreSQL or SQLite.

The ledger, not Prefect's cache, decides whether a document counts as indexed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flows.common.db import Database, utc_now
from flows.rag.sources.base import DocumentRef

# Ledger statuses of a document.
PENDING, INDEXED, SKIPPED, FAILED, DELETED = "pending", "indexed", "skipped", "failed", "deleted"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the planner needs of one document's row."""

    doc_id: str
    name: str
    path: str
    version: str
    status: str
    embedding_model: str | None
    size: int | None
    mtime_ns: int | None
    reason: str | None = None  # why it was skipped or failed: a listing may decide otherwise later
    modified: str | None = None  # the source's modification time, as listed
    readers: tuple[str, ...] | None = None  # who may read it (flows/rag/readers.py); None: not recorded yet


@dataclass(frozen=True, slots=True)
class LedgerDocument:
    """What the ledger records of one document."""

    source_id: str
    doc_id: str
    path: str
    status: str
    version: str
    chunk_count: int
    collection: str | None


_IDS_PER_QUERY = 500  # placeholders per IN (...) list, well under SQLite's and PostgreSQL's limits

MIGRATIONS = [
    """CREATE TABLE rag_documents (
        source_id TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        mime_type TEXT,
        version TEXT NOT NULL,
        size BIGINT,
        mtime_ns BIGINT,
        modified TEXT,
        status TEXT NOT NULL,
        reason TEXT,
        chunk_count INTEGER NOT NULL DEFAULT 0,
        split_chunks INTEGER NOT NULL DEFAULT 0,
        embedding_model TEXT,
        collection TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (source_id, doc_id))""",
    "CREATE INDEX rag_documents_by_status ON rag_documents (source_id, status)",
    """CREATE TABLE rag_sync_cursors (
        source_id TEXT PRIMARY KEY, cursor TEXT, updated_at TEXT NOT NULL)""",
    """CREATE TABLE rag_runs (
        run_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        source_id TEXT,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        stats TEXT)""",
    # The model whose collection each alias was last seen on: a sync with nothing to do skips the store.
    """CREATE TABLE rag_aliases (
        alias TEXT PRIMARY KEY, embedding_model TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    # The model an explicit run started moving the alias to: later syncs carry the migration on until it is published.
    "ALTER TABLE rag_aliases ADD COLUMN migration_target TEXT",
    # Who may read each document, as a JSON list (flows/rag/readers.py); NULL: recorded before readers were.
    "ALTER TABLE rag_documents ADD COLUMN readers TEXT",
    # Copies by checksum (flows/rag/duplicates.py) look documents up by version.
    "CREATE INDEX rag_documents_by_version ON rag_documents (version)",
]

_UPSERT_DOCUMENT = """
INSERT INTO rag_documents (source_id, doc_id, name, path, mime_type, version, size, mtime_ns, modified,
    status, reason, chunk_count, split_chunks, embedding_model, collection, updated_at, readers)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (source_id, doc_id) DO UPDATE SET
    name = excluded.name, path = excluded.path, mime_type = excluded.mime_type,
    version = excluded.version, size = excluded.size, mtime_ns = excluded.mtime_ns,
    modified = excluded.modified, status = excluded.status, reason = excluded.reason,
    chunk_count = excluded.chunk_count, split_chunks = excluded.split_chunks,
    embedding_model = excluded.embedding_model, collection = excluded.collection,
    updated_at = excluded.updated_at, readers = excluded.readers
"""


@dataclass(frozen=True, slots=True)
class DocumentOutcome:
    """How ingesting one document ended."""

    ref: DocumentRef
    status: str  # indexed | skipped | failed
    reason: str | None = None
    chunk_count: int = 0
    split_chunks: int = 0  # chunks cut in two to fit the model's token window


def _readers(stored: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(stored)) if stored is not None else None


class RagLedger:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema("rag", MIGRATIONS)

    def entries(self, source_id: str) -> dict[str, LedgerEntry]:
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT doc_id, name, path, version, status, embedding_model, size, mtime_ns, reason, modified,"
                " readers FROM rag_documents WHERE source_id = %s",
                (source_id,),
            ).fetchall()
        return {row[0]: LedgerEntry(*row[:-1], readers=_readers(row[-1])) for row in rows}

    def _document_rows(
        self,
        source_id: str,
        items: Iterable[tuple[DocumentRef, str, str | None, int, int]],
        model: str | None,
        collection: str | None,
    ) -> list[tuple[Any, ...]]:
        now = utc_now()
        return [
            (source_id, ref.doc_id, ref.name, ref.path, ref.mime_type, ref.version, ref.size, ref.mtime_ns,
             ref.modified, status, reason, chunks, split, model, collection, now, json.dumps(ref.readers))
            for ref, status, reason, chunks, split in items
        ]  # fmt: skip

    def mark_pending(self, source_id: str, refs: Sequence[DocumentRef], model: str, collection: str) -> None:
        """Recorded before any point is written, so a crash leaves the document to be re-done."""
        rows = self._document_rows(source_id, ((r, PENDING, None, 0, 0) for r in refs), model, collection)
        with self.db.connect() as conn:
            conn.executemany(_UPSERT_DOCUMENT, rows)

    def record_outcomes(self, source_id: str, outcomes: Sequence[DocumentOutcome], model: str, collection: str) -> None:
        items = ((o.ref, o.status, o.reason, o.chunk_count, o.split_chunks) for o in outcomes)
        rows = self._document_rows(source_id, items, model, collection)
        with self.db.connect() as conn:
            conn.executemany(_UPSERT_DOCUMENT, rows)

    def documents(self, source_id: str | None = None) -> list[LedgerDocument]:
        """Every document of one source (or of all) as rag-verify compares it with the store."""
        sql = "SELECT source_id, doc_id, path, status, version, chunk_count, collection FROM rag_documents"
        params: tuple[str, ...] = ()
        if source_id:
            sql, params = sql + " WHERE source_id = %s", (source_id,)
        with self.db.connect() as conn:
            return [LedgerDocument(*row) for row in conn.execute(sql, params).fetchall()]

    def indexed_with_versions(self, versions: Sequence[str], model: str, collection: str) -> list[tuple[Any, ...]]:
        """Documents of any source indexed with ``model`` into ``collection`` at one of ``versions``, as
        (source_id, doc_id, version, size, mime_type, name, chunk_count, split_chunks): where a copy of the same
        content finds its chunks (flows/rag/duplicates.py)."""
        wanted = sorted(set(versions))
        found: list[tuple[Any, ...]] = []
        with self.db.connect() as conn:
            for start in range(0, len(wanted), _IDS_PER_QUERY):
                part = wanted[start : start + _IDS_PER_QUERY]
                found += conn.execute(
                    "SELECT source_id, doc_id, version, size, mime_type, name, chunk_count, split_chunks"
                    f" FROM rag_documents WHERE version IN ({', '.join(['%s'] * len(part))})"
                    " AND status = %s AND embedding_model = %s AND collection = %s ORDER BY source_id, doc_id",
                    (*part, INDEXED, model, collection),
                ).fetchall()
        return found

    def mark_for_reingest(self, source_id: str, doc_ids: Sequence[str]) -> None:
        """Pending without a new version: the next sync re-indexes them (plan_sync counts pending as changed)."""
        now = utc_now()
        with self.db.connect() as conn:
            conn.executemany(
                "UPDATE rag_documents SET status = %s, updated_at = %s WHERE source_id = %s AND doc_id = %s",
                [(PENDING, now, source_id, d) for d in doc_ids],
            )

    def refresh_metadata(self, source_id: str, refs: Sequence[DocumentRef]) -> None:
        now = utc_now()
        with self.db.connect() as conn:
            conn.executemany(
                "UPDATE rag_documents SET name = %s, path = %s, size = %s, mtime_ns = %s, modified = %s,"
                " readers = %s, updated_at = %s WHERE source_id = %s AND doc_id = %s",
                [
                    (r.name, r.path, r.size, r.mtime_ns, r.modified, json.dumps(r.readers), now, source_id, r.doc_id)
                    for r in refs
                ],
            )

    def mark_deleted(self, source_id: str, doc_ids: Sequence[str]) -> None:
        now = utc_now()
        with self.db.connect() as conn:
            conn.executemany(
                "UPDATE rag_documents SET status = %s, reason = NULL, chunk_count = 0, updated_at = %s"
                " WHERE source_id = %s AND doc_id = %s",
                [(DELETED, now, source_id, d) for d in doc_ids],
            )

    def get_cursor(self, source_id: str) -> str | None:
        return self._read_keyed("rag_sync_cursors", "source_id", source_id, "cursor")

    def set_cursor(self, source_id: str, cursor: str | None) -> None:
        self._write_keyed("rag_sync_cursors", "source_id", source_id, "cursor", cursor)

    def published_model(self, alias: str) -> str | None:
        """The model whose collection ``alias`` was last seen on (Qdrant holds the truth; this is a cheap hint)."""
        return self._read_keyed("rag_aliases", "alias", alias, "embedding_model")

    def record_published_model(self, alias: str, model: str) -> None:
        """The alias serves ``model`` now: a migration to it is done, one to another model stays pending."""
        with self.db.connect() as conn:
            conn.execute(
                "INSERT INTO rag_aliases (alias, embedding_model, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (alias) DO UPDATE SET embedding_model = excluded.embedding_model,"
                " migration_target = nullif(rag_aliases.migration_target, excluded.embedding_model),"
                " updated_at = excluded.updated_at",
                (alias, model, utc_now()),
            )

    def migration_target(self, alias: str) -> str | None:
        """The model an unfinished migration of ``alias`` is moving it to (None: no migration under way)."""
        return self._read_keyed("rag_aliases", "alias", alias, "migration_target")

    def set_migration_target(self, alias: str, model: str | None) -> None:
        """Start (a model) or end (None) a migration of a published alias; a row unchanged is not written."""
        with self.db.connect() as conn:
            conn.execute(
                "UPDATE rag_aliases SET migration_target = %s, updated_at = %s"
                " WHERE alias = %s AND coalesce(migration_target, '') <> coalesce(%s, '')",
                (model, utc_now(), alias, model),
            )

    # Key/value tables (cursors, aliases); table and column names are this module's constants, never input.
    def _read_keyed(self, table: str, key_column: str, key: str, value_column: str) -> str | None:
        with self.db.connect() as conn:
            row = conn.execute(f"SELECT {value_column} FROM {table} WHERE {key_column} = %s", (key,)).fetchone()
        return row[0] if row else None

    def _write_keyed(self, table: str, key_column: str, key: str, value_column: str, value: str | None) -> None:
        with self.db.connect() as conn:
            conn.execute(
                f"INSERT INTO {table} ({key_column}, {value_column}, updated_at) VALUES (%s, %s, %s)"
                f" ON CONFLICT ({key_column}) DO UPDATE SET {value_column} = excluded.{value_column},"
                " updated_at = excluded.updated_at",
                (key, value, utc_now()),
            )

    def start_run(self, flow: str, source_id: str | None) -> str:
        run_id = uuid.uuid4().hex
        with self.db.connect() as conn:
            conn.execute(
                "INSERT INTO rag_runs (run_id, flow, source_id, status, started_at) VALUES (%s, %s, %s, %s, %s)",
                (run_id, flow, source_id, "running", utc_now()),
            )
        return run_id

    def finish_run(self, run_id: str, status: str, stats: dict[str, Any]) -> None:
        with self.db.connect() as conn:
            conn.execute(
                "UPDATE rag_runs SET status = %s, finished_at = %s, stats = %s WHERE run_id = %s",
                (status, utc_now(), json.dumps(stats, default=str), run_id),
            )

    def status_counts(self, source_id: str | None = None) -> dict[str, int]:
        sql = "SELECT status, count(*) FROM rag_documents"
        params: tuple[str, ...] = ()
        if source_id:
            sql, params = sql + " WHERE source_id = %s", (source_id,)
        with self.db.connect() as conn:
            rows = conn.execute(sql + " GROUP BY status", params).fetchall()
        return {status: count for status, count in rows}

    def outcome_totals(self, source_id: str, doc_ids: set[str]) -> dict[str, int]:
        """How these documents' ingest ended, as recorded (the ledger is the state of record): documents indexed,
        skipped and failed, and the chunks written and split."""
        totals = {INDEXED: 0, SKIPPED: 0, FAILED: 0, "chunks": 0, "split_chunks": 0}
        ids = sorted(doc_ids)
        with self.db.connect() as conn:
            for start in range(0, len(ids), _IDS_PER_QUERY):  # a batch's rows, not the whole source's, per call
                part = ids[start : start + _IDS_PER_QUERY]
                rows = conn.execute(
                    "SELECT status, count(*), coalesce(sum(chunk_count), 0), coalesce(sum(split_chunks), 0)"
                    f" FROM rag_documents WHERE source_id = %s AND doc_id IN ({', '.join(['%s'] * len(part))})"
                    " GROUP BY status",
                    (source_id, *part),
                ).fetchall()
                for status, count, chunks, split in rows:
                    if status in totals:
                        totals[status] += int(count)
                    if status == INDEXED:
                        totals["chunks"] += int(chunks)
                        totals["split_chunks"] += int(split)
        return totals

    def documents_not_on(self, model: str) -> int:
        """Documents of any source still pending, or indexed with another model."""
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM rag_documents WHERE status = %s"
                " OR (status = %s AND coalesce(embedding_model, '') <> %s)",
                (PENDING, INDEXED, model),
            ).fetchone()
        return int(row[0])

    def done_totals(self, source_id: str) -> tuple[int, int]:
        """(documents, bytes) of the source whose ingest ended (indexed, skipped or failed): a backfill's progress."""
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM rag_documents WHERE source_id = %s"
                " AND status IN (%s, %s, %s)",
                (source_id, INDEXED, SKIPPED, FAILED),
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def last_run(self) -> dict[str, Any] | None:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT run_id, flow, source_id, status, started_at, finished_at, stats FROM rag_runs"
                " WHERE flow = %s ORDER BY started_at DESC LIMIT 1",
                ("rag-sync",),
            ).fetchone()
        if row is None:
            return None
        keys = ("run_id", "flow", "source_id", "status", "started_at", "finished_at", "stats")
        run = dict(zip(keys, row, strict=True))
        run["stats"] = json.loads(run["stats"]) if run["stats"] else {}
        return run

    def problems(self, source_id: str, limit: int = 50) -> list[tuple[str, str, str]]:
        """(path, status, reason) of skipped and failed documents."""
        with self.db.connect() as conn:
            return conn.execute(
                "SELECT path, status, reason FROM rag_documents WHERE source_id = %s"
                " AND status IN (%s, %s) ORDER BY path LIMIT %s",
                (source_id, SKIPPED, FAILED, limit),
            ).fetchall()
