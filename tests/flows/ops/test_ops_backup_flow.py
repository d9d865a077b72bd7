"""The backup and restore flows end to end on real PostgreSQL, Redis and an embedded Qdrant store."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from prefect.artifacts import Artifact
from prefect.exceptions import ParameterTypeError
from qdrant_client import QdrantClient, models

from blocks import PostgresLedger, QdrantConnection, RedisServer
from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.common.events import BACKUP_FAILED, BACKUP_SUCCEEDED
from flows.ops import backup as backup_module
from flows.ops import backup_postgres as pg
from flows.ops.backup import backup
from flows.ops.backup_catalog import BackupFailed, Catalog
from flows.ops.backup_redis import dump_rdb, redis_target
from flows.ops.restore import restore
from testkit.ops_services import HEALTHY, fake_service
from tests.flows.ops.conftest import PG_ADMIN_URL
from tests.flows.ops.test_ops_qdrant_snapshot import DATA, snapshot_routes


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
    with pytest.raises(ParameterTypeError, match="qdrant_mode"):  # a choice in the form now
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


PG_PASSWORD = "pg-pa55word-that-must-not-leak"
QDRANT_KEY = "qdrant-key-that-must-not-leak"
NOWHERE = {"postgres_dsn": "postgresql://postgres@127.0.0.1:1/postgres", "redis_url": "redis://127.0.0.1:1/0",
           "qdrant_url": "http://127.0.0.1:1"}  # fmt: skip


def test_blocks_name_the_stores_and_their_secrets_reach_them_but_no_record(
    tmp_path: Path,
    source_db: str,
    pg_ledger_url: str,
    auth_redis: tuple[str, str],
    events: list,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_url, redis_password = auth_redis
    PostgresLedger(url=PG_ADMIN_URL, password=PG_PASSWORD).save("backup-postgres", overwrite=True)
    PostgresLedger(url=pg_ledger_url, password=PG_PASSWORD).save("backup-ledger", overwrite=True)
    RedisServer(url=redis_url, password=redis_password).save("backup-redis", overwrite=True)
    tools: list[tuple[list[str], str | None]] = []  # each PostgreSQL client call: its argv and PGPASSWORD
    real_run_tool = pg.run_tool

    def run_tool(args: Sequence[str], what: str, timeout_s: float = 3600, env: dict | None = None) -> str:
        tools.append((list(args), (env or {}).get("PGPASSWORD")))
        return real_run_tool(args, what, timeout_s, env)

    monkeypatch.setattr(pg, "run_tool", run_tool)
    unused_ledger = tmp_path / "unused-ledger.db"
    blocks = {"postgres_block": "backup-postgres", "redis_block": "backup-redis", "qdrant_block": "backup-qdrant",
              "ledger_block": "backup-ledger"}  # fmt: skip
    routes = {**HEALTHY["qdrant"], **snapshot_routes(hashlib.sha256(DATA).hexdigest())}
    with fake_service(routes) as qdrant, caplog.at_level(logging.INFO):
        QdrantConnection(url=qdrant.url, api_key=QDRANT_KEY).save("backup-qdrant", overwrite=True)
        summary = backup(
            backup_dir=str(tmp_path / "backups"), databases=[source_db], min_free_bytes=0,
            ledger_url=f"sqlite:///{unused_ledger}", qdrant_path=str(tmp_path / "unused-qdrant"), **NOWHERE, **blocks,
        )  # fmt: skip
        qdrant_keys = {h.get("api-key") for h in qdrant.headers_seen}
    assert summary == {"good": 4, "failed": 0, "pruned": 0}  # database, globals, redis, qdrant snapshot
    assert qdrant_keys == {QDRANT_KEY}
    assert not unused_ledger.exists() and not (tmp_path / "unused-qdrant").exists()
    catalog = Catalog(Database(pg_ledger_url))  # the catalog went to the ledger block's database
    (dump,) = catalog.series("postgres", source_db)
    assert [e.status for e in catalog.series("redis", redis_target(redis_url))] == ["good"]
    # The password reaches every client tool that connects through its environment, never on a command line.
    connecting = [(argv[0], password) for argv, password in tools if "--dbname" in argv]
    assert set(connecting) == {("pg_dump", PG_PASSWORD), ("pg_dumpall", PG_PASSWORD), ("pg_restore", PG_PASSWORD)}
    assert all(PG_PASSWORD not in " ".join(argv) for argv, _ in tools)
    with psycopg.connect(pg_ledger_url) as conn:
        rows = conn.execute("SELECT * FROM backup_catalog").fetchall()
    report = Artifact.get("backup-report")
    for text in (str(rows), str(report.data if report else ""), caplog.text, str(events)):
        assert PG_PASSWORD not in text and QDRANT_KEY not in text and redis_password not in text
    with pytest.raises(BackupFailed, match=r"NOAUTH|[Aa]uthentication"):  # the RDB copy did need the password
        dump_rdb(redis_url, tmp_path / "no-auth.rdb")

    message = restore(
        dump.id, target=f"{source_db}_restored", postgres_dsn=NOWHERE["postgres_dsn"],
        ledger_url=f"sqlite:///{unused_ledger}", postgres_block="backup-postgres", ledger_block="backup-ledger",
    )  # fmt: skip
    assert message == f"restored 3 tables, 290 rows into {source_db}_restored"
    (snapshot,) = catalog.series("qdrant-snapshot", "docs")
    upload = {"POST /collections/docs/snapshots/upload": (200, {"result": True, "status": "ok"})}
    with fake_service(upload) as qdrant:
        QdrantConnection(url=qdrant.url, api_key="restore-key").save("restore-qdrant", overwrite=True)
        assert "recovered into docs" in restore(
            snapshot.id, qdrant_url=NOWHERE["qdrant_url"], qdrant_block="restore-qdrant", ledger_block="backup-ledger"
        )
        assert [h.get("api-key") for h in qdrant.headers_seen] == ["restore-key", "restore-key"]


@pytest.mark.parametrize(
    ("parameter", "block_type"),
    [("postgres_block", "PostgresLedger"), ("redis_block", "RedisServer"), ("qdrant_block", "QdrantConnection"),
     ("ledger_block", "PostgresLedger")],
)  # fmt: skip
def test_an_unknown_block_fails_the_run_before_any_work(tmp_path: Path, parameter: str, block_type: str) -> None:
    with pytest.raises(ConfigError, match=f"^{parameter}: no {block_type} block named 'nope'"):
        backup(backup_dir=str(tmp_path / "backups"), **{parameter: "nope"})
    assert not (tmp_path / "backups").exists()
    if parameter != "redis_block":  # restore has no Redis block: RDB files are put back by hand
        with pytest.raises(ConfigError, match=f"^{parameter}: no {block_type} block named 'nope'"):
            restore("any-id", **{parameter: "nope"})
