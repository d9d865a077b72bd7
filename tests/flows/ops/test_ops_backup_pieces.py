"""Backup pieces against real PostgreSQL, Redis and embedded Qdrant."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psycopg
import pytest
from qdrant_client import QdrantClient, models

from flows.ops import backup_postgres as pg
from flows.ops import backup_qdrant as bq
from flows.ops.backup_catalog import BackupFailed, check_free_space
from flows.ops.backup_redis import dump_rdb, verify_rdb
from tests.flows.ops.conftest import PG_ADMIN_URL


def _snapshot(dbname: str) -> dict[str, list[tuple]]:
    with psycopg.connect(pg.dsn_for(PG_ADMIN_URL, dbname)) as conn:
        return {
            "documents": conn.execute("SELECT * FROM documents ORDER BY id").fetchall(),
            "reports": conn.execute("SELECT * FROM research.reports ORDER BY id").fetchall(),
        }


@pytest.fixture
def scratch_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The databases this test's backup calls create (other tests on other workers make their own)."""
    made: list[str] = []
    real = pg.create_database

    def recording(base_dsn: str, dbname: str) -> None:
        made.append(dbname)
        real(base_dsn, dbname)

    monkeypatch.setattr(pg, "create_database", recording)
    return made


def _existing(names: list[str]) -> set[str]:
    with psycopg.connect(PG_ADMIN_URL) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,)).fetchall()
    return {r[0] for r in rows}


def test_dump_verify_change_restore_gives_the_dumped_data_back(
    source_db: str, tmp_path: Path, scratch_made: list[str]
) -> None:
    before = _snapshot(source_db)
    dump = tmp_path / f"{source_db}.dump"
    counts = pg.dump_database(PG_ADMIN_URL, source_db, dump)
    assert counts == {"public.documents": 250, "public.empty_one": 0, "research.reports": 40}
    summary = pg.verify_dump(dump, PG_ADMIN_URL, counts)
    assert "3 tables, 290 rows verified" in summary
    assert len(scratch_made) == 1 and not _existing(scratch_made)  # the scratch database is gone

    with psycopg.connect(pg.dsn_for(PG_ADMIN_URL, source_db)) as conn:
        conn.execute("DELETE FROM documents WHERE id % 2 = 0")
        conn.execute("UPDATE research.reports SET cost = 0")
    assert _snapshot(source_db) != before

    with pytest.raises(BackupFailed, match="exists and holds tables"):
        pg.restore_database(dump, PG_ADMIN_URL, source_db)
    assert pg.restore_database(dump, PG_ADMIN_URL, source_db, overwrite=True).startswith("restored 3 tables")
    assert _snapshot(source_db) == before

    pg.restore_database(dump, PG_ADMIN_URL, f"{source_db}_restored")  # a new name needs no overwrite
    assert _snapshot(f"{source_db}_restored") == before


def test_truncated_dump_fails_verification(source_db: str, tmp_path: Path, scratch_made: list[str]) -> None:
    dump = tmp_path / "full.dump"
    counts = pg.dump_database(PG_ADMIN_URL, source_db, dump)
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(dump.read_bytes()[: dump.stat().st_size * 2 // 3])
    with pytest.raises(BackupFailed) as info:
        pg.verify_dump(truncated, PG_ADMIN_URL, counts)
    assert "failed" in str(info.value)
    assert not _existing(scratch_made)  # the full read fails first, or the scratch restore and its drop


def test_wrong_counts_fail_verification(source_db: str, tmp_path: Path) -> None:
    dump = tmp_path / "full.dump"
    counts = pg.dump_database(PG_ADMIN_URL, source_db, dump)
    with pytest.raises(BackupFailed, match=r"public.documents: 251 -> 250"):
        pg.verify_dump(dump, PG_ADMIN_URL, {**counts, "public.documents": 251})


def test_globals_dump_is_complete(tmp_path: Path) -> None:
    dest = tmp_path / "globals.sql"
    pg.dump_globals(PG_ADMIN_URL, dest)
    assert "CREATE ROLE postgres" in dest.read_text()
    dest.write_text(dest.read_text()[:50])
    with pytest.raises(BackupFailed, match="incomplete"):
        pg.verify_globals(dest)


def test_missing_pg_dump_is_a_clear_failure(source_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupFailed, match="pg_dump not found on PATH"):
        pg.dump_database(PG_ADMIN_URL, source_db, tmp_path / "x.dump")


def test_free_space_check_refuses_a_backup_that_would_fill_the_disk(tmp_path: Path) -> None:
    check_free_space(tmp_path, 1, 0)
    tiny = lambda _p: SimpleNamespace(free=10 * 2**20)  # noqa: E731
    with pytest.raises(BackupFailed, match="not enough disk space"):
        check_free_space(tmp_path, 8 * 2**20, 4 * 2**20, usage=tiny)


def test_redis_rdb_has_the_magic_header_and_end_marker(tmp_path: Path) -> None:
    dest = tmp_path / "dump.rdb"
    dump_rdb("redis://127.0.0.1:6379/0", dest)
    assert dest.read_bytes()[:5] == b"REDIS"
    assert verify_rdb(dest).startswith("RDB version")
    dest.write_bytes(dest.read_bytes()[:-5])
    with pytest.raises(BackupFailed, match="truncated"):
        verify_rdb(dest)


def test_redis_unreachable_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(BackupFailed, match="redis-cli --rdb failed"):
        dump_rdb("redis://127.0.0.1:1", tmp_path / "dump.rdb", timeout_s=20)


@pytest.fixture
def qdrant(fast_tmp: Path) -> QdrantClient:
    client = QdrantClient(path=str(fast_tmp / "qdrant"))
    client.create_collection("docs", vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE))
    rng = np.random.default_rng(7)
    points = [
        models.PointStruct(
            id=i,
            vector=rng.normal(size=16).tolist(),
            payload={"doc_id": f"d{i // 10}", "chunk": i % 10, "t": "x" * i},
        )
        for i in range(600)
    ]
    client.upsert("docs", points)
    return client


def test_qdrant_export_restore_gives_same_count_and_points(qdrant: QdrantClient, tmp_path: Path) -> None:
    dest = tmp_path / "docs.jsonl.gz"
    assert bq.export_collection(qdrant, "docs", dest) == 600
    assert "600 points restored" in bq.verify_export(qdrant, dest, 600)
    assert [c.name for c in qdrant.get_collections().collections] == ["docs"]  # scratch removed

    with pytest.raises(BackupFailed, match="holds points"):
        bq.restore_export(qdrant, dest, "docs")
    assert bq.restore_export(qdrant, dest, "docs-copy") == 600
    original = qdrant.retrieve("docs", [5, 333], with_vectors=True)
    copy = qdrant.retrieve("docs-copy", [5, 333], with_vectors=True)
    assert [p.payload for p in original] == [p.payload for p in copy]
    assert np.allclose([p.vector for p in original], [p.vector for p in copy], atol=1e-5)


def test_damaged_qdrant_export_fails_verification(qdrant: QdrantClient, tmp_path: Path) -> None:
    dest = tmp_path / "docs.jsonl.gz"
    bq.export_collection(qdrant, "docs", dest)
    raw = gzip.decompress(dest.read_bytes()).splitlines(keepends=True)
    dest.write_bytes(gzip.compress(b"".join(raw[:-50])))  # 50 points lost
    with pytest.raises(BackupFailed, match="restored 550 points, expected 600"):
        bq.verify_export(qdrant, dest, 600)
    dest.write_bytes(dest.read_bytes()[:300])  # cut mid-stream
    with pytest.raises(BackupFailed):
        bq.verify_export(qdrant, dest, 600)


def test_failed_restore_leaves_the_live_database_untouched(
    source_db: str, tmp_path: Path, scratch_made: list[str]
) -> None:
    before = _snapshot(source_db)
    dump = tmp_path / "full.dump"
    pg.dump_database(PG_ADMIN_URL, source_db, dump)
    broken = tmp_path / "broken.dump"
    broken.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    with pytest.raises(BackupFailed, match="pg_restore"):
        pg.restore_database(broken, PG_ADMIN_URL, source_db, overwrite=True)
    assert _snapshot(source_db) == before
    assert len(scratch_made) == 1 and not _existing(scratch_made)


def test_a_failed_attempt_never_deletes_another_attempts_file(tmp_path: Path) -> None:
    from flows.ops.backup import attempt

    def good(path: Path) -> str:
        path.write_bytes(b"data")
        return "ok"

    def bad(path: Path) -> str:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    first = attempt("redis", "r", tmp_path, "rdb", good)
    second = attempt("redis", "r", tmp_path, "rdb", bad)  # same second, same series
    assert (first.status, second.status) == ("good", "bad")
    assert Path(first.location).read_bytes() == b"data"
    assert not Path(second.location).exists()
    assert second.reason == "OSError: [Errno 28] No space left on device"
    assert first.sha256 == "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
