"""The backup catalog in the ledger (table ``backup_catalog``) and helpers every backup kind shares.

One row per attempt, good or bad: what (kind + target), where, size, sha256, whether it was verified,
status and the one-line reason of a failure. Pruned backups keep their row with ``pruned_at`` set.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flows.common.db import Database, utc_now
from flows.common.errors import SwarmError

MIGRATIONS = [
    "CREATE TABLE backup_catalog ("
    " id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, location TEXT NOT NULL,"
    " size_bytes BIGINT, sha256 TEXT, verified INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT,"
    " detail TEXT, created_at TEXT NOT NULL, pruned_at TEXT)",
    "CREATE INDEX backup_catalog_series ON backup_catalog (kind, target, created_at)",
]
GOOD, BAD = "good", "bad"
COLUMNS = "id, kind, target, location, size_bytes, sha256, verified, status, reason, detail, created_at, pruned_at"


class BackupFailed(SwarmError):
    """A backup or its verification failed; the message is the reason stored in the catalog."""


@dataclass
class CatalogEntry:
    kind: str
    target: str
    location: str
    status: str = BAD
    verified: bool = False
    size_bytes: int | None = None
    sha256: str | None = None
    reason: str | None = None
    detail: str | None = None
    created_at: str = field(default_factory=utc_now)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    pruned_at: str | None = None

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)


class Catalog:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema("backup", MIGRATIONS)

    def record(self, e: CatalogEntry) -> None:
        with self.db.connect() as conn:
            conn.execute(
                f"INSERT INTO backup_catalog ({COLUMNS}) VALUES ({', '.join(['%s'] * 12)})",
                (e.id, e.kind, e.target, e.location, e.size_bytes, e.sha256, int(e.verified), e.status,
                 e.reason, e.detail, e.created_at, e.pruned_at),
            )  # fmt: skip

    def _rows(self, where: str, params: Sequence[Any]) -> list[CatalogEntry]:
        with self.db.connect() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM backup_catalog WHERE {where}", params).fetchall()
        return [
            CatalogEntry(id=r[0], kind=r[1], target=r[2], location=r[3], size_bytes=r[4], sha256=r[5],
                         verified=bool(r[6]), status=r[7], reason=r[8], detail=r[9], created_at=r[10],
                         pruned_at=r[11])
            for r in rows
        ]  # fmt: skip

    def get(self, backup_id: str) -> CatalogEntry | None:
        found = self._rows("id = %s", (backup_id,))
        return found[0] if found else None

    def series(self, kind: str, target: str) -> list[CatalogEntry]:
        """Entries of one series not pruned yet, oldest first."""
        return self._rows("kind = %s AND target = %s AND pruned_at IS NULL ORDER BY created_at", (kind, target))

    def mark_pruned(self, backup_id: str) -> None:
        with self.db.connect() as conn:
            conn.execute("UPDATE backup_catalog SET pruned_at = %s WHERE id = %s", (utc_now(), backup_id))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_free_space(
    folder: Path,
    needed_bytes: int,
    min_free_bytes: int,
    usage: Callable[[Path], Any] = shutil.disk_usage,
) -> None:
    """Refuse to start a backup that would fill the disk (an estimate; a full write still fails cleanly)."""
    free = usage(folder).free
    if free - needed_bytes < min_free_bytes:
        raise BackupFailed(
            f"not enough disk space in {folder}: {free / 2**20:.0f} MiB free, backup needs about"
            f" {needed_bytes / 2**20:.0f} MiB and {min_free_bytes / 2**20:.0f} MiB must stay free"
        )


def run_tool(args: Sequence[str], what: str, timeout_s: float = 3600, env: dict[str, str] | None = None) -> str:
    """Run a client binary; a missing binary or a non-zero exit becomes a one-line BackupFailed."""
    if shutil.which(args[0]) is None:
        raise BackupFailed(f"{args[0]} not found on PATH: install the client tools on this node")
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BackupFailed(f"{what} did not finish within {timeout_s:g} s") from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or [f"exit {proc.returncode}"]
        raise BackupFailed(f"{what} failed: {lines[-1].strip()[:300]}")
    return proc.stdout


def finish_file(entry: CatalogEntry, path: Path) -> None:
    entry.size_bytes = path.stat().st_size
    entry.sha256 = sha256_file(path)
