"""The Drive source's own ledger tables: sync tokens, the scope's folder tree, and file -> parent.

``tree_token`` is the cursor the stored tree matches. The sync saves a ChangeSet's ``next_cursor`` only
after applying it, so a cursor that differs from ``tree_token`` means the last run stopped half-way: the
tree is then rebuilt by a full listing instead of trusting a tree that is ahead of the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from flows.common.db import Database, utc_now
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
]

_CHUNK = 5000


def _chunks(rows: list, size: int = _CHUNK) -> Iterable[list]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


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

    def tree_token(self) -> str | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT tree_token FROM gdrive_state WHERE source_id = %s", (self.source_id,)).fetchone()
        return row[0] if row else None

    def listing_rules(self) -> str | None:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT listing_rules FROM gdrive_state WHERE source_id = %s", (self.source_id,)
            ).fetchone()
        return row[0] if row else None

    def load_tree(self) -> Tree:
        with self.db.connect() as conn:
            row = conn.execute("SELECT roots_json FROM gdrive_state WHERE source_id = %s", (self.source_id,)).fetchone()
            rows = conn.execute(
                "SELECT node_id, parent_id, name, kind, target_id FROM gdrive_nodes WHERE source_id = %s",
                (self.source_id,),
            ).fetchall()
        tree = Tree(json.loads(row[0]) if row and row[0] else {})
        for node_id, parent, name, kind, target in rows:
            tree.nodes[node_id] = Node(parent, name, kind, target)
        return tree

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
        files: list[tuple[str, str, str | None]],
        removed: Iterable[str],
        replace: bool,
        rules: str,
    ) -> None:
        """Persist the tree and the file rows, and mark them as matching ``token`` and judged by ``rules`` — one
        transaction."""
        sid = self.source_id
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
            upsert_node = (
                "INSERT INTO gdrive_nodes (source_id, node_id, parent_id, name, kind, target_id)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source_id, node_id) DO UPDATE SET"
                " parent_id = excluded.parent_id, name = excluded.name, kind = excluded.kind,"
                " target_id = excluded.target_id"
            )
            for chunk in _chunks(dirty):
                rows = [(sid, n, tree.nodes[n].parent, tree.nodes[n].name, tree.nodes[n].kind,
                         tree.nodes[n].target) for n in chunk]  # fmt: skip
                conn.executemany(upsert_node, rows)
            upsert_file = (
                "INSERT INTO gdrive_files (source_id, file_id, parent_id, shortcut_id)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (source_id, file_id) DO UPDATE SET parent_id = excluded.parent_id,"
                " shortcut_id = excluded.shortcut_id"
            )
            for chunk in _chunks(files):
                conn.executemany(upsert_file, [(sid, *row) for row in chunk])
            conn.execute(
                "INSERT INTO gdrive_state (source_id, tree_token, roots_json, listing_rules, updated_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source_id) DO UPDATE SET"
                " tree_token = excluded.tree_token, roots_json = excluded.roots_json,"
                " listing_rules = excluded.listing_rules, updated_at = excluded.updated_at",
                (sid, token, json.dumps(tree.roots, sort_keys=True), rules, utc_now()),
            )
        tree.dirty.clear()
        tree.deleted.clear()
