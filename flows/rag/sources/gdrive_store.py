"""The Drive source's own ledger tables: sync tokens, the scope's folder tree, file -> parent, and the
document changes handed out but not yet known to be applied.

``tree_token`` is the change token the stored tree matches; the tree, its token and the document changes derived
from the feed up to it are saved in one transaction. The sync saves a ChangeSet's ``next_cursor`` only after
applying every change in it, so:

* cursor == ``tree_token``: everything handed out was applied; the next feed is read from there;
* cursor == ``unapplied_from`` (None included: a first sync): the run that got the last set died before saving its
  cursor (a failed batch, a crash, a cancel, a paced sync that reached its budget): the feed is read on from
  ``tree_token`` and the unapplied changes are handed out again with it, so the tree is never re-listed for a
  failure and nothing the dead run saw is lost (the ledger skips what it did apply: same versions). A full listing
  is kept too (``unapplied_complete``): the next set is complete again, without listing;
* anything else: the tree cannot be trusted and is rebuilt by a full listing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import NamedTuple

from flows.common.db import Database, utc_now
from flows.rag.sources.base import DocumentRef
from flows.rag.sources.gdrive_tree import Node, Tree

MIGRATIONS = [
    "CREATE TABLE gdrive_state (source_id TEXT PRIMARY KEY, pending_token TEXT, tree_token TEXT,"
    " roots_json TEXT, updated_at TEXT NOT NULL)",
    "CREATE TABLE gdrive_nodes (source_id TEXT NOT NULL, node_id TEXT NOT NULL, parent_id TEXT,"
    " name TEXT NOT NULL, kind TEXT NOT NULL, target_id TEXT, PRIMARY KEY (source_id, node_id))",
    "CREATE TABLE gdrive_files (source_id TEXT NOT NULL, file_id TEXT NOT NULL, parent_id TEXT NOT NULL,"
    " shortcut_id TEXT, PRIMARY KEY (source_id, file_id))",
    "CREATE INDEX gdrive_files_parent ON gdrive_files (source_id, parent_id)",
    # What the stored listing's skip reasons were decided by (flows/rag/indexable.py listing_rules).
    "ALTER TABLE gdrive_state ADD COLUMN listing_rules TEXT",
    # The document changes handed out since the cursor ``unapplied_from``, a few thousand per row (_encode_part):
    # a full listing's million refs are written and dropped as a few hundred rows.
    "CREATE TABLE gdrive_unapplied (source_id TEXT NOT NULL, part INTEGER NOT NULL, refs_json TEXT NOT NULL,"
    " PRIMARY KEY (source_id, part))",
    "ALTER TABLE gdrive_state ADD COLUMN unapplied_from TEXT",
    "ALTER TABLE gdrive_state ADD COLUMN unapplied_complete INTEGER NOT NULL DEFAULT 0",
    # Sharing the change feed does not report (flows/rag/sources/gdrive.py): what each folder passes on, to tell
    # a folder's sharing change from its other changes, and when each file's readers next lapse.
    "ALTER TABLE gdrive_nodes ADD COLUMN sharing TEXT",
    "ALTER TABLE gdrive_state ADD COLUMN roots_sharing_json TEXT",
    "ALTER TABLE gdrive_files ADD COLUMN lapses_at TEXT",
    "CREATE INDEX gdrive_files_lapses ON gdrive_files (source_id, lapses_at)",
]

_CHUNK = 5000


def _chunks(rows: Iterable, size: int = _CHUNK) -> Iterator[list]:
    items = iter(rows)
    while part := list(islice(items, size)):
        yield part


def instant(when: datetime) -> str:
    """A time as stored: one UTC format, so stored times compare as strings in SQL."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


class FileRow(NamedTuple):
    """A file in the scope: its folder, the shortcut it is held through (None: held directly), and when its
    readers next lapse (None: never)."""

    file_id: str
    parent_id: str
    shortcut_id: str | None
    lapses_at: datetime | None = None


class SyncState(NamedTuple):
    tree_token: str | None
    listing_rules: str | None
    unapplied_from: str | None
    unapplied_complete: bool


@dataclass(slots=True)
class Unapplied:
    """The document changes handed out since the ledger's cursor ``since``: doc id -> its ref, or None when removed.
    ``complete``: a full listing (and the feed after it): a document it lacks is gone."""

    since: str | None
    complete: bool
    refs: dict[str, DocumentRef | None]


_REF_FIELDS = [f.name for f in dataclasses.fields(DocumentRef)]


def _encode_part(part: list[tuple[str, DocumentRef | None]]) -> str:
    """Refs as value lists under one field list: compact, and readable after DocumentRef gains or loses a field."""
    refs = {doc_id: None if ref is None else [getattr(ref, f) for f in _REF_FIELDS] for doc_id, ref in part}
    return json.dumps({"fields": _REF_FIELDS, "refs": refs}, separators=(",", ":"))


def _decode_part(text: str) -> Iterator[tuple[str, DocumentRef | None]]:
    part = json.loads(text)
    known = [(i, f) for i, f in enumerate(part["fields"]) if f in _REF_FIELDS]
    for doc_id, values in part["refs"].items():
        if values is None:
            yield doc_id, None
        else:  # JSON has no tuples: a list-valued field comes back as the tuple it was
            yield doc_id, DocumentRef(**{f: tuple(v) if isinstance(v := values[i], list) else v for i, f in known})


class GdriveStore:
    def __init__(self, db: Database, source_id: str) -> None:
        self.db = db
        self.source_id = source_id
        db.ensure_schema("gdrive", MIGRATIONS)

    def save_pending_token(self, token: str) -> None:
        """Recorded before a full listing starts, as the issue asks (see module docstring)."""
        with self.db.connect() as conn:
            conn.execute(
                "INSERT INTO gdrive_state (source_id, pending_token, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (source_id) DO UPDATE SET pending_token = excluded.pending_token,"
                " updated_at = excluded.updated_at",
                (self.source_id, token, utc_now()),
            )

    def state(self) -> SyncState:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT tree_token, listing_rules, unapplied_from, unapplied_complete FROM gdrive_state"
                " WHERE source_id = %s",
                (self.source_id,),
            ).fetchone()
        return SyncState(row[0], row[1], row[2], bool(row[3])) if row else SyncState(None, None, None, False)

    def unapplied(self, state: SyncState) -> Unapplied:
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT refs_json FROM gdrive_unapplied WHERE source_id = %s ORDER BY part", (self.source_id,)
            ).fetchall()
        refs = {doc_id: ref for (text,) in rows for doc_id, ref in _decode_part(text)}
        return Unapplied(state.unapplied_from, state.unapplied_complete, refs)

    def load_tree(self) -> Tree:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT roots_json, roots_sharing_json FROM gdrive_state WHERE source_id = %s", (self.source_id,)
            ).fetchone()
            rows = conn.execute(
                "SELECT node_id, parent_id, name, kind, target_id, sharing FROM gdrive_nodes WHERE source_id = %s",
                (self.source_id,),
            ).fetchall()
        tree = Tree(json.loads(row[0]) if row and row[0] else {})
        tree.root_access = json.loads(row[1]) if row and row[1] else {}
        for node_id, parent, name, kind, target, sharing in rows:
            tree.nodes[node_id] = Node(parent, name, kind, target, sharing)
        return tree

    def lapsed(self, now: datetime) -> list[str]:
        """Files whose readers lapsed by ``now`` (an expired permission), to be read again."""
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT file_id FROM gdrive_files WHERE source_id = %s AND lapses_at <= %s ORDER BY file_id",
                (self.source_id, instant(now)),
            ).fetchall()
        return [file_id for (file_id,) in rows]

    def files_under(self, parents: list[str]) -> list[tuple[str, str | None]]:
        """(file id, shortcut id) of files recorded directly in these folders."""
        found: list[tuple[str, str | None]] = []
        with self.db.connect() as conn:
            for chunk in _chunks(parents, 500):
                marks = ", ".join(["%s"] * len(chunk))
                found += conn.execute(
                    f"SELECT file_id, shortcut_id FROM gdrive_files WHERE source_id = %s AND parent_id IN ({marks})",
                    (self.source_id, *chunk),
                ).fetchall()
        return found

    def shortcut_of(self, file_ids: list[str]) -> dict[str, str | None]:
        """file id -> shortcut id (None: held directly) for recorded files."""
        out: dict[str, str | None] = {}
        with self.db.connect() as conn:
            for chunk in _chunks(file_ids, 500):
                marks = ", ".join(["%s"] * len(chunk))
                for file_id, shortcut in conn.execute(
                    f"SELECT file_id, shortcut_id FROM gdrive_files WHERE source_id = %s AND file_id IN ({marks})",
                    (self.source_id, *chunk),
                ).fetchall():
                    out[file_id] = shortcut
        return out

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(file id, shortcut id) of every file held through a shortcut."""
        with self.db.connect() as conn:
            return conn.execute(
                "SELECT file_id, shortcut_id FROM gdrive_files WHERE source_id = %s AND shortcut_id IS NOT NULL",
                (self.source_id,),
            ).fetchall()

    def save(
        self,
        tree: Tree,
        token: str,
        files: list[FileRow],
        removed: Iterable[str],
        replace: bool,
        rules: str,
        handed: Unapplied,
    ) -> None:
        """Persist the tree and the file rows, mark them as matching ``token`` and judged by ``rules``, and record
        the document changes handed out with ``token`` — one transaction."""
        sid = self.source_id
        roots = (json.dumps(tree.roots, sort_keys=True), json.dumps(tree.root_access, sort_keys=True))
        state = (sid, token, *roots, rules, handed.since, int(handed.complete))
        with self.db.connect() as conn:
            if replace:
                conn.execute("DELETE FROM gdrive_nodes WHERE source_id = %s", (sid,))
                conn.execute("DELETE FROM gdrive_files WHERE source_id = %s", (sid,))
                dirty = list(tree.nodes)
            else:
                dirty = sorted(tree.dirty)
                for chunk in _chunks(sorted(tree.deleted) + sorted(removed), 500):
                    marks = ", ".join(["%s"] * len(chunk))
                    conn.execute(
                        f"DELETE FROM gdrive_nodes WHERE source_id = %s AND node_id IN ({marks})",
                        (sid, *chunk),
                    )
                    conn.execute(
                        f"DELETE FROM gdrive_files WHERE source_id = %s AND file_id IN ({marks})",
                        (sid, *chunk),
                    )
            conn.execute("DELETE FROM gdrive_unapplied WHERE source_id = %s", (sid,))
            for number, part in enumerate(_chunks(handed.refs.items())):
                conn.execute(
                    "INSERT INTO gdrive_unapplied (source_id, part, refs_json) VALUES (%s, %s, %s)",
                    (sid, number, _encode_part(part)),
                )
            upsert_node = (
                "INSERT INTO gdrive_nodes (source_id, node_id, parent_id, name, kind, target_id, sharing)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source_id, node_id) DO UPDATE SET"
                " parent_id = excluded.parent_id, name = excluded.name, kind = excluded.kind,"
                " target_id = excluded.target_id, sharing = excluded.sharing"
            )
            for chunk in _chunks(dirty):
                rows = [(sid, n, tree.nodes[n].parent, tree.nodes[n].name, tree.nodes[n].kind,
                         tree.nodes[n].target, tree.nodes[n].access) for n in chunk]  # fmt: skip
                conn.executemany(upsert_node, rows)
            upsert_file = (
                "INSERT INTO gdrive_files (source_id, file_id, parent_id, shortcut_id, lapses_at)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (source_id, file_id) DO UPDATE SET parent_id = excluded.parent_id,"
                " shortcut_id = excluded.shortcut_id, lapses_at = excluded.lapses_at"
            )
            for chunk in _chunks(files):
                conn.executemany(upsert_file, [(sid, *f[:3], f.lapses_at and instant(f.lapses_at)) for f in chunk])
            conn.execute(
                "INSERT INTO gdrive_state (source_id, tree_token, roots_json, roots_sharing_json, listing_rules,"
                " unapplied_from, unapplied_complete, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (source_id) DO UPDATE SET tree_token = excluded.tree_token,"
                " roots_json = excluded.roots_json, roots_sharing_json = excluded.roots_sharing_json,"
                " listing_rules = excluded.listing_rules, unapplied_from = excluded.unapplied_from,"
                " unapplied_complete = excluded.unapplied_complete, updated_at = excluded.updated_at",
                (*state, utc_now()),
            )
        tree.dirty.clear()
        tree.deleted.clear()
