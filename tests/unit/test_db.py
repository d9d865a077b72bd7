from __future__ import annotations

import pytest

from flows.common.db import Database
from flows.common.errors import ConfigError, ServiceUnavailable
from flows.common.redact import redact

MIGRATIONS = [
    "CREATE TABLE widgets (id TEXT PRIMARY KEY, size BIGINT NOT NULL)",
    "ALTER TABLE widgets ADD COLUMN colour TEXT",
]


def test_migrations_apply_once_and_in_order(ledger_url: str) -> None:
    db = Database(ledger_url)
    db.ensure_schema("widgets", MIGRATIONS[:1])
    db.ensure_schema("widgets", MIGRATIONS[:1])  # a second start changes nothing
    db.ensure_schema("widgets", MIGRATIONS)  # an upgrade applies only the new step
    with db.connect() as conn:
        conn.execute("INSERT INTO widgets (id, size, colour) VALUES (%s, %s, %s)", ("a", 3, "red"))
        version = conn.execute("SELECT version FROM schema_versions WHERE component = %s", ("widgets",))
        assert version.fetchone() == (2,)


def test_failed_transaction_rolls_back(ledger_url: str) -> None:
    db = Database(ledger_url)
    db.ensure_schema("widgets", MIGRATIONS)
    with pytest.raises(RuntimeError), db.connect() as conn:
        conn.execute("INSERT INTO widgets (id, size) VALUES (%s, %s)", ("a", 1))
        raise RuntimeError("boom")
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM widgets").fetchone() == (0,)


def test_unreachable_postgres_is_one_clear_error() -> None:
    db = Database("postgresql://swarm:hunter2@127.0.0.1:1/ledger")
    with pytest.raises(ServiceUnavailable) as info, db.connect():
        pass
    assert "cannot reach the ledger at postgresql://swarm:***@127.0.0.1:1/ledger" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_unknown_url_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        Database("mysql://localhost/db")


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:p@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("postgresql://h:5432/d") == "postgresql://h:5432/d"
