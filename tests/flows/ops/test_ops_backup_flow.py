"""The backup and restore flows end to end on real PostgreSQL, Redis and an embedded Qdrant store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from qdrant_client import QdrantClient, models

from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.common.events import BACKUP_FAILED, BACKUP_SUCCEEDED
from flows.ops import backup as backup_module
from flows.ops import backup_postgres as pg
from flows.ops.backup import backup
from flows.ops.backup_catalog import BackupFailed, Catalog
from flows.ops.restore import restore
from tests.flows.ops.conftest import PG_ADMIN_URL


@pytest.fixture
def qdrant_path(fast_tmp: Path) -> str:
    path = str(fast_tmp / "qdrant")
    client = QdrantClient(path=path)
    client.create_collection("docs", vectors_config=models.VectorParams(size=8, distance=models.Distance.DOT))
    rng = np.random.default_rng(1)
    client.upsert(
        "docs",
        [models.PointStruct(id=i, vector=rng.normal(size=8).tolist(), payload={"i": i}) for i in range(50)],
    )
    client.close()  # the embedded store allows one client at a time
    return path


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(backup_module, "emit_event", lambda **kw: sent.append(kw))
    return sent


def _params(tmp_path: Path, source_db: str, qdrant_path: str | None) -> dict[str, Any]:
    return {
        "backup_dir": str(tmp_path / "backups"),
        "postgres_dsn": PG_ADMIN_URL,
        "databases": [source_db],
        "redis_url": "redis://127.0.0.1:6379/0",
        "qdrant_url": None,
        "qdrant_path": qdrant_path,
        "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        "min_free_bytes": 0,
    }


def test_backup_then_restore(tmp_path: Path, source_db: str, qdrant_path: str, events: list) -> None:
    params = _params(tmp_path, source_db, qdrant_path)
    summary = backup(**params)
    assert summary == {"good": 4, "failed": 0, "pruned": 0}
    assert [e["event"] for e in events] == [BACKUP_SUCCEEDED] * 4
    catalog = Catalog(Database(params["ledger_url"]))
    entries = {
        e.kind: e for k in ("postgres", "redis", "qdrant-export") for e in catalog.series(k, _target(k, source_db))
    }
    assert set(entries) == {"postgres", "redis", "qdrant-export"}
    assert all(e.verified and e.sha256 and Path(e.location).stat().st_size == e.size_bytes for e in entries.values())
    assert "290 rows verified" in (entries["postgres"].detail or "")

    with psycopg.connect(pg.dsn_for(PG_ADMIN_URL, source_db)) as conn:
        conn.execute("DELETE FROM documents")
    with pytest.raises(BackupFailed, match="overwrite=True"):
        restore(entries["postgres"].id, postgres_dsn=PG_ADMIN_URL, ledger_url=params["ledger_url"])
    message = restore(
        entries["postgres"].id, overwrite=True, postgres_dsn=PG_ADMIN_URL, ledger_url=params["ledger_url"]
    )
    assert "290 rows" in message
    restored = restore(
        entries["qdrant-export"].id, target="docs-restored", qdrant_url=None, qdrant_path=qdrant_path,
        ledger_url=params["ledger_url"],
    )  # fmt: skip
    assert restored == "restored 50 points into docs-restored"
    with pytest.raises(ConfigError, match="Redis restores need the server stopped"):
        restore(entries["redis"].id, ledger_url=params["ledger_url"])

    Path(entries["postgres"].location).write_bytes(b"tampered")
    with pytest.raises(BackupFailed, match="does not match its sha256"):
        restore(entries["postgres"].id, target="x", postgres_dsn=PG_ADMIN_URL, ledger_url=params["ledger_url"])


def _target(kind: str, source_db: str) -> str:
    return {"postgres": source_db, "redis": "127.0.0.1-6379", "qdrant-export": "docs"}[kind]


def test_failures_are_loud_recorded_and_never_prune_good_backups(
    tmp_path: Path, source_db: str, events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {**_params(tmp_path, source_db, None), "redis_url": None, "include_globals": False,
              "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}  # fmt: skip
    assert backup(**params)["good"] == 1
    catalog = Catalog(Database(params["ledger_url"]))
    (good,) = catalog.series("postgres", source_db)

    with pytest.raises(BackupFailed, match="not enough disk space"):  # a "full disk"
        backup(**{**params, "min_free_bytes": 2**62})
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump on this node
    with pytest.raises(BackupFailed, match="pg_dump not found on PATH"):
        backup(**params)
    monkeypatch.undo()

    series = catalog.series("postgres", source_db)
    assert [e.status for e in series] == ["good", "bad", "bad"]
    assert series[0].id == good.id and Path(good.location).exists()
    assert all(not Path(e.location).exists() for e in series[1:])  # partial files removed
    assert [e["event"] for e in events] == [BACKUP_SUCCEEDED, BACKUP_FAILED, BACKUP_FAILED]
    assert events[-1]["resource"]["prefect.resource.id"] == f"swarm.backup.postgres.{source_db}"

    # The next good run prunes the older good backup (keep 0 = only the newest) but keeps recent failures.
    assert backup(**params)["pruned"] == 1
    assert not Path(good.location).exists()
    assert [e.status for e in catalog.series("postgres", source_db)] == ["bad", "bad", "good"]


def test_bad_parameters_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="qdrant_mode"):
        backup(backup_dir=str(tmp_path), qdrant_mode="rsync")
    with pytest.raises(ConfigError, match="no backup 'nope'"):
        restore("nope", ledger_url=f"sqlite:///{tmp_path / 'l.db'}")


def test_unreachable_stores_are_failed_backups_not_crashes(tmp_path: Path, events: list) -> None:
    params = {
        "backup_dir": str(tmp_path / "backups"),
        "postgres_dsn": "postgresql://postgres@127.0.0.1:1/postgres",
        "include_globals": False,
        "redis_url": None,
        "qdrant_url": "http://127.0.0.1:1",
        "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        "min_free_bytes": 0,
    }
    with pytest.raises(BackupFailed, match="2 of 2 backups failed") as info:
        backup(**params)
    assert str(info.value).count("cannot list what to back up") == 2
    catalog = Catalog(Database(params["ledger_url"]))
    assert [e.status for k in ("postgres", "qdrant") for e in catalog.series(k, "all")] == ["bad", "bad"]
    assert len(events) == 2
