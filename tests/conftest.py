"""Shared fixtures: a throwaway PostgreSQL database per test session, ledger URLs for both backends,
and the Prefect test harness (one per session: two nested harnesses would fight over one API; see
docs/prefect-practice.md)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

if TYPE_CHECKING:
    from testkit.gateway import Gateway

# Nothing in the tests may reach the network: model weights come from site-packages only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")

PG_ADMIN_URL = os.environ.get("SWARM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# What one machine has only one of: under pytest-xdist (scripts/test.sh) the tests that use it share one worker
# (--dist loadgroup), so there is one gateway per run and the test hosts' fixed names never meet.
_ONE_PER_MACHINE = {"gateway": "gateway", "network": "test-hosts"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, group in _ONE_PER_MACHINE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One throwaway Prefect API for the whole session; the user's data dir is never touched."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ["SWARM_DATA_DIR"] = str(tmp_path_factory.mktemp("swarm-data"))
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"swarm_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_pg_schema(pg_url: str) -> str:
    """A new schema inside the session database, so each test starts from empty tables."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_url}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each ledger test runs on both backends, each time on empty tables."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return _fresh_pg_schema(request.getfixturevalue("pg_database"))


@pytest.fixture
def pg_ledger_url(pg_database: str) -> str:
    return _fresh_pg_schema(pg_database)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The real LiteLLM proxy with deployments/litellm/config.yaml in front of `transformers serve`, started once
    per session (testkit/gateway.py: what the test configuration changes, what it serves)."""
    from testkit.gateway import LITELLM, run_gateway

    if not LITELLM.exists():
        pytest.skip(f"no LiteLLM proxy at {LITELLM} (scripts/install.sh --test builds .venv-gateway)")
    with run_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running
