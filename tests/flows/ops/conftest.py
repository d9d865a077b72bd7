"""Fixtures for the ops tests: a small source database in the local PostgreSQL, dropped afterwards, and a
Redis server of its own that requires a password."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from testkit.cluster import free_port, wait_until

PG_ADMIN_URL = os.environ.get("SWARM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def source_db() -> Iterator[str]:
    """A database with a few tables and rows; yields its name."""
    name = f"swarm_test_src_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}") as conn:
        conn.execute("CREATE TABLE documents (id SERIAL PRIMARY KEY, title TEXT NOT NULL, body TEXT)")
        conn.execute("CREATE SCHEMA research")
        conn.execute("CREATE TABLE research.reports (id BIGINT PRIMARY KEY, cost DOUBLE PRECISION)")
        conn.execute("CREATE TABLE empty_one (k TEXT)")
        conn.execute(
            "INSERT INTO documents (title, body) SELECT 'doc ' || g, repeat('x', g) FROM generate_series(1, 250) g"
        )
        conn.execute("INSERT INTO research.reports SELECT g, g * 0.01 FROM generate_series(1, 40) g")
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_restored" WITH (FORCE)')


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A temp folder in RAM when the machine has /dev/shm: embedded Qdrant commits every point to SQLite,
    which costs ~14 ms a point on a real disk here and makes a 600-point test take seconds."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="swarm-ops-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def auth_redis(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real Redis on a free port that refuses every command before AUTH; yields (url, password)."""
    password = f"redis-pw-{uuid.uuid4().hex[:8]}"
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def accepting() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("redis-server exited before it listened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    try:
        wait_until(accepting, 10, "redis-server to listen", every=0.05)
        yield f"redis://127.0.0.1:{port}/0", password
    finally:
        proc.terminate()
        proc.wait(10)
