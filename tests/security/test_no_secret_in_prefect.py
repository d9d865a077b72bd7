"""No secret leaves the blocks and the node's environment: every flow runs with canary secrets there, then all
that Prefect's API returns about those runs (parameters, states, task runs, logs, artifacts, events), every
ledger row (the backup catalog among them) and every command line seen meanwhile is searched for them.

Real PostgreSQL (trust auth: any password is accepted), a Redis that requires its password, pg_dump and
friends, the CLI in its own process, gpt-researcher in its venv; Qdrant's and an OpenAI server's HTTP APIs
come from the local servers the other tests use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventOccurredFilter
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from psycopg import sql

from blocks import OpenAICompatibleEndpoint, PostgresLedger, QdrantConnection, RedisServer, SearxngServer
from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.inference.batch_inference import batch_inference
from flows.ops.backup import backup
from flows.ops.backup_catalog import Catalog
from flows.ops.health import health
from flows.ops.restore import restore
from flows.rag.ingest_batch import ingest_batch
from flows.rag.sources.local import LocalFolderSpec
from flows.rag.sync import rag_sync
from flows.research.research import research
from testkit.inference_openai_server import run_fake_openai
from testkit.ops_services import HEALTHY, fake_service
from testkit.research_searxng import run_fake_searxng
from tests.flows.cli_runner import SWARM, swarm_env
from tests.flows.inference.test_inference_flow import write_batch
from tests.flows.ops.conftest import PG_ADMIN_URL, auth_redis  # noqa: F401 - a fixture
from tests.flows.ops.test_ops_qdrant_snapshot import DATA, snapshot_routes
from tests.flows.research.test_research_flow import GPTR_PYTHON, answer, offline  # noqa: F401 - a fixture

CLIENT_TOOLS = ("pg_dump", "pg_dumpall", "pg_restore", "psql", "redis-cli")


def canary(what: str) -> str:
    return f"canary-{what}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def argv_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each PostgreSQL and Redis client tool a flow starts writes its command line here, then runs."""
    shims, log = tmp_path / "shims", tmp_path / "argv.log"
    shims.mkdir()
    for tool in CLIENT_TOOLS:
        if real := shutil.which(tool):
            shim = shims / tool
            shim.write_text(f'#!/bin/sh\necho "$0 $*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n')
            shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    return log


class CommandLineWatch(threading.Thread):
    """Reads every process's command line on this machine every few milliseconds; keeps those with a canary."""

    def __init__(self, canaries: list[str]) -> None:
        super().__init__(daemon=True)
        self.canaries, self.seen, self.polls = canaries, set[str](), 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for entry in Path("/proc").iterdir():
                try:
                    text = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue  # not a process, or it just ended
                if any(c in text for c in self.canaries):
                    self.seen.add(text)
            self.polls += 1
            self._done.wait(0.005)

    def stop(self) -> None:
        self._done.set()
        self.join(10)


@pytest.fixture
def ledger_db(pg_ledger_url: str) -> Iterator[str]:
    """A small database to back up and restore; dropped afterwards with its restored copy."""
    name = f"swarm_test_canary_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}") as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5) g")
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for db in (name, f"{name}_restored"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def refused(run: Callable[[], Any]) -> str:
    """The one-line ConfigError a flow answers a secret-bearing parameter with."""
    with pytest.raises(ConfigError, match=r"holds a password|not a run setting|instead of api_key itself") as info:
        run()
    return str(info.value)


def paged(read: Callable[[int], list[Any]]) -> list[Any]:
    """Every item of an API listing that is capped per call (the server's default limit)."""
    items: list[Any] = []
    while page := read(len(items)):
        items += page
    return items


def prefect_record(client: SyncPrefectClient, since: datetime, wait_for_event: str) -> dict[str, str]:
    """What Prefect keeps of the runs started since ``since``, as text per kind of record."""
    APILogWorker.drain_all()
    EventsWorker.drain_all()
    run_filter = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since))
    runs = paged(lambda offset: client.read_flow_runs(flow_run_filter=run_filter, offset=offset, limit=100))
    ids = [r.id for r in runs]
    by_id = FlowRunFilter(id=FlowRunFilterId(any_=ids))
    tasks = paged(lambda offset: client.read_task_runs(flow_run_filter=by_id, offset=offset, limit=100))
    logs = paged(
        lambda offset: client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), offset=offset, limit=200)
    )
    artifacts = paged(
        lambda offset: client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)), offset=offset, limit=100
        )
    )
    events: list[Any] = []
    deadline = time.monotonic() + 30  # the server persists events in batches
    while time.monotonic() < deadline:
        page = client.read_events(EventFilter(occurred=EventOccurredFilter(since=since)), limit=50)
        events = list(page.events)
        while page.next_page:
            page = client.read_events_page(page.next_page)
            events += page.events
        if any(e.event == wait_for_event for e in events):
            break
        time.sleep(0.5)
    assert any(e.event == wait_for_event for e in events), "the events never reached the API: nothing was checked"

    def dump(items: list[Any], exclude: set[str] | None = None) -> str:
        return "\n".join(i.model_dump_json(exclude=exclude) for i in items)

    return {
        "flow-run parameters": "\n".join(json.dumps(r.parameters, default=str) for r in runs),
        "flow runs (states, names, context)": dump(runs, exclude={"parameters"}),
        "task runs": dump(tasks),
        "logs": dump(logs),
        "artifacts": dump(artifacts),
        "events": dump(events),
    }


def ledger_rows(ledger_url: str) -> str:
    with psycopg.connect(ledger_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return "\n".join(
            f"{t}: {conn.execute(sql.SQL('SELECT * FROM {}').format(sql.Identifier(t))).fetchall()}" for (t,) in tables
        )


@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_no_canary_secret_leaves_the_blocks_and_the_environment(
    tmp_path: Path,
    pg_ledger_url: str,
    ledger_db: str,
    auth_redis: tuple[str, str],  # noqa: F811 - the imported fixture
    argv_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_url, redis_password = auth_redis
    secrets = {
        "ledger block password": canary("ledger"),
        "postgres block password": canary("pg-admin"),
        "redis block password": redis_password,
        "qdrant block api key": canary("qdrant-block"),
        "endpoint block api key": canary("vllm-block"),
        "research llm block api key": canary("llm-block"),
        "SWARM_QDRANT_API_KEY": canary("qdrant-env"),
        "SWARM_LEDGER_URL password": canary("ledger-env"),
        "VLLM_API_KEY": canary("vllm-env"),
        "a health probe's key (api_key_env)": canary("probe-env"),
    }
    param_canary = canary("parameter")  # may only appear in the parameters of the runs that refuse it
    PostgresLedger(url=pg_ledger_url, password=secrets["ledger block password"]).save("canary-ledger", overwrite=True)
    PostgresLedger(url=PG_ADMIN_URL, password=secrets["postgres block password"]).save("canary-pg", overwrite=True)
    RedisServer(url=redis_url, password=redis_password).save("canary-redis", overwrite=True)
    monkeypatch.setenv("VLLM_API_KEY", secrets["VLLM_API_KEY"])
    monkeypatch.setenv("CANARY_PROBE_KEY", secrets["a health probe's key (api_key_env)"])
    monkeypatch.setenv("SWARM_BATCH_ROOTS", str(tmp_path))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.md").write_text("# Bees\n\nBees dance to tell the hive where the flowers are.\n")
    watch = CommandLineWatch([*secrets.values(), param_canary])
    watch.start()
    since = datetime.now(UTC)
    upload = {"POST /collections/docs-restored/snapshots/upload": (200, {"result": True, "status": "ok"})}
    snapshot = {**HEALTHY["qdrant"], **snapshot_routes(hashlib.sha256(DATA).hexdigest()), **upload}
    try:
        # rag-sync through the CLI, its Qdrant key and ledger password in the node's environment.
        env = swarm_env(tmp_path / "data") | {
            "SWARM_QDRANT_API_KEY": secrets["SWARM_QDRANT_API_KEY"],
            "SWARM_LEDGER_URL": f"{pg_ledger_url}&password={secrets['SWARM_LEDGER_URL password']}",
        }
        cli = subprocess.run([SWARM, "ingest", str(docs)], env=env, capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr
        # ingest-batch runs on its own only when dispatched to a worker: here with its ledger from a block.
        ingest_batch(LocalFolderSpec(path=str(docs)), [], config={"ledger_block": "canary-ledger"})

        with fake_service(snapshot) as qdrant, run_fake_openai() as llm, run_fake_searxng() as searx:
            QdrantConnection(url=qdrant.url, api_key=secrets["qdrant block api key"]).save("canary-q", overwrite=True)
            OpenAICompatibleEndpoint(base_url=f"{llm.url}/v1", api_key=secrets["endpoint block api key"]).save(
                "canary-vllm", overwrite=True
            )
            OpenAICompatibleEndpoint(
                base_url=f"{llm.url}/v1", api_key=secrets["research llm block api key"], chat_model="m"
            ).save("canary-llm", overwrite=True)
            SearxngServer(url=searx.url).save("canary-searx", overwrite=True)
            llm.chat_responder = answer

            probes = [{"name": "pg", "kind": "postgres", "node": "oracle", "target": PG_ADMIN_URL},
                      {"name": "q", "kind": "qdrant", "node": "oracle", "target": qdrant.url,
                       "api_key_env": "CANARY_PROBE_KEY"}]  # fmt: skip
            health(inventory=probes, local_node="oracle", ledger_block="canary-ledger",
                   state_file=str(tmp_path / "health.json"))  # fmt: skip
            blocks = {"postgres_block": "canary-pg", "redis_block": "canary-redis", "qdrant_block": "canary-q",
                      "ledger_block": "canary-ledger"}  # fmt: skip
            assert backup(backup_dir=str(tmp_path / "backups"), databases=[ledger_db], min_free_bytes=0, **blocks)
            catalog = Catalog(Database(PostgresLedger.load("canary-ledger").connection_url()))
            (dump,) = catalog.series("postgres", ledger_db)
            (snap,) = catalog.series("qdrant-snapshot", "docs")
            restore(dump.id, target=f"{ledger_db}_restored", postgres_block="canary-pg", ledger_block="canary-ledger")
            restore(snap.id, target="docs-restored", qdrant_block="canary-q", ledger_block="canary-ledger")
            batch = write_batch(tmp_path / "in.jsonl", 2)
            batch_inference(str(batch), str(tmp_path / "o1.jsonl"), endpoint_block="canary-vllm",
                            ledger_block="canary-ledger")  # fmt: skip
            batch_inference(str(batch), str(tmp_path / "o2.jsonl"), base_url=llm.url, api_key_env="VLLM_API_KEY",
                            ledger_block="canary-ledger")  # fmt: skip
            if Path(GPTR_PYTHON).exists():
                research(
                    "How do bees find flowers?", llm_block="canary-llm", searxng_block="canary-searx",
                    ledger_block="canary-ledger", gptr_python=GPTR_PYTHON, max_iterations=1, max_subtopics=1,
                    timeout_s=60, local_context_k=0, output_dir=str(tmp_path / "reports"),
                )  # fmt: skip
            used = {h.get("api-key") for h in qdrant.headers_seen} | set(llm.auth)
        # Every secret did reach its service (so the searches below look for something real).
        assert {secrets["qdrant block api key"], secrets["a health probe's key (api_key_env)"]} <= used
        assert {f"Bearer {secrets['endpoint block api key']}", f"Bearer {secrets['VLLM_API_KEY']}"} <= used
        assert not Path(GPTR_PYTHON).exists() or f"Bearer {secrets['research llm block api key']}" in used

        # A parameter that would carry a secret is refused, with one line that does not repeat it.
        with_password = f"postgresql://postgres:{param_canary}@127.0.0.1:5432/postgres"
        messages = [
            refused(lambda: backup(backup_dir=str(tmp_path / "b2"), ledger_url=with_password)),
            refused(lambda: backup(backup_dir=str(tmp_path / "b2"), postgres_dsn=with_password)),
            refused(lambda: backup(backup_dir=str(tmp_path / "b2"), redis_url=f"redis://:{param_canary}@h:6379/0")),
            refused(lambda: restore("any", postgres_dsn=with_password)),
            refused(lambda: health(inventory=[], ledger_url=with_password)),
            refused(lambda: health(inventory=[{**probes[0], "target": with_password}])),
            refused(lambda: health(inventory=[{**probes[1], "api_key": param_canary}])),
            refused(lambda: batch_inference(str(batch), str(tmp_path / "o3.jsonl"), ledger_url=with_password)),
            refused(lambda: rag_sync(LocalFolderSpec(path=str(docs)), config={"qdrant_api_key": param_canary})),
            refused(lambda: rag_sync(LocalFolderSpec(path=str(docs)), config={"ledger_url": with_password})),
        ]
        assert not any(param_canary in m for m in messages), messages
        with get_client(sync_client=True) as client:
            record = prefect_record(client, since, "swarm.backup.succeeded")
    finally:
        watch.stop()
    assert watch.polls > 10

    places = {
        **record,
        "ledger and backup catalog": ledger_rows(pg_ledger_url),
        "client tools' command lines": argv_log.read_text(),
        "command lines of every process": "\n".join(watch.seen),
        "CLI output": cli.stdout + cli.stderr,
    }
    # Each search can find what it looks for: the refused runs' parameters, the tools, the catalog.
    assert param_canary in places["flow-run parameters"]
    assert "pg_dump" in places["client tools' command lines"]
    assert "backup_catalog" in places["ledger and backup catalog"]
    leaks = [(name, place) for name, secret in secrets.items() for place, text in places.items() if secret in text]
    leaks += [
        ("a refused parameter", p) for p, text in places.items() if p != "flow-run parameters" and param_canary in text
    ]
    assert not leaks, leaks
