"""End to end on loopback: a real Prefect server, the bootstrap (twice), ``prefect deploy --all`` of the
project's prefect.yaml, and one real worker per node pool. rag-sync on oracle dispatches its batches to
ingest-batch on thanos; a schedule fires by itself on starlord; a stopped thanos worker makes batches wait.

All nodes share the PostgreSQL ledger and one embedded Qdrant folder; only thanos runs touch Qdrant
(rag-sync never opens it when dispatching, and the thanos worker runs one flow at a time)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from qdrant_client import QdrantClient

from flows.common.db import Database
from flows.rag.ledger import RagLedger
from tests.e2e.cluster import PREFECT, Proc, clean_env, run_cli, start_server, start_worker, wait_until
from tests.fakes.documents import write_document

pytestmark = pytest.mark.slow

TOPICS = {
    "otters.md": "Sea otters hold hands while they sleep so that they do not drift apart.",
    "bridges.txt": "Suspension bridges hang their deck from cables slung over tall towers.",
    "bees.md": "Honey bees dance in a figure eight to tell the hive where flowers are.",
    "comets.txt": "Comets grow a glowing tail of gas and dust when they pass close to the sun.",
    "tides.md": "Tides rise and fall twice a day because the moon pulls on the oceans.",
}
LATER = {
    "lanterns.md": "Paper lanterns float on the river during the autumn festival.",
    "cacti.txt": "Cacti store water in thick stems to survive long droughts in the desert.",
}


class Cluster:
    def __init__(self, root: Path, ledger_url: str) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.ledger_url = ledger_url
        self.qdrant_path = root / "qdrant"
        self.procs: list[Proc] = []
        self.workers: dict[str, Proc] = {}

    def start(self) -> None:
        server, self.api_url = start_server(self.root / "prefect-home", self.logs)
        self.procs.append(server)
        self.cli_env = clean_env(PREFECT_API_URL=self.api_url, PREFECT_HOME=str(self.root / "cli-home"))

    def worker_env(self, pool: str) -> dict[str, str]:
        return clean_env(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.root / f"home-{pool}"),
            PREFECT_WORKER_QUERY_SECONDS="1",
            SWARM_REPO=str(self.root.parent / "repo-link"),  # what the pull step resolves on the node
            SWARM_DATA_DIR=str(self.root / f"data-{pool}"),
            SWARM_LEDGER_URL=self.ledger_url,
            SWARM_QDRANT_PATH=str(self.qdrant_path),
            SWARM_DEVICE="cpu",
            SWARM_PARSE_WORKERS="1",
        )

    def start_worker(self, pool: str) -> None:
        # thanos: one run at a time, as embedded Qdrant admits one process (a Qdrant server has no such limit)
        self.workers[pool] = start_worker(pool, self.worker_env(pool), self.logs, limit=1 if pool == "thanos" else None)

    def stop(self) -> None:
        for proc in [*self.workers.values(), *reversed(self.procs)]:
            proc.stop()

    def client(self) -> SyncPrefectClient:
        return get_client(sync_client=True)

    def logs_tail(self) -> str:
        return "\n\n".join(f"== {p.name}\n{p.tail()}" for p in [*self.procs, *self.workers.values()])


@pytest.fixture
def cluster(tmp_path: Path, pg_ledger_url: str) -> Iterator[Cluster]:
    from tests.e2e.cluster import REPO

    (tmp_path / "repo-link").symlink_to(REPO)
    node = Cluster(tmp_path / "cluster", pg_ledger_url)
    node.start()
    try:
        with temporary_settings({PREFECT_API_URL: node.api_url}):
            yield node
    except BaseException:
        print(node.logs_tail())
        raise
    finally:
        node.stop()


def deployment_id(client: SyncPrefectClient, name: str) -> UUID:
    return client.read_deployment_by_name(name).id


def runs_of(client: SyncPrefectClient, name: str) -> list[FlowRun]:
    flt = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id(client, name)]))
    return client.read_flow_runs(deployment_filter=flt)


def quiet_schedules(client: SyncPrefectClient) -> None:
    """The project's schedules (health every 5 min, ...) must not fire here: pause every deployment and
    delete the runs the scheduler already created."""
    for deployment in client.read_deployments():
        client.pause_deployment(deployment.id)
    scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    for attempt in range(2):  # again after one scheduler loop (2 s): it may have been mid-iteration
        for run in client.read_flow_runs(flow_run_filter=scheduled):
            client.delete_flow_run(run.id)
        if attempt == 0:
            time.sleep(3)


def final_state(client: SyncPrefectClient, run_id: UUID, timeout: float) -> FlowRun:
    def done() -> FlowRun | None:
        run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return wait_until(done, timeout, f"flow run {run_id} to finish", every=1)


def start_sync(cluster: Cluster, docs: Path) -> UUID:
    params = {"source": {"kind": "local", "path": str(docs)}, "config": {"batch_files": 3}}
    out = run_cli(
        [*PREFECT, "deployment", "run", "rag-sync/local-hourly", "--params", json.dumps(params)], cluster.cli_env
    )
    return UUID(out.split("UUID:")[1].split()[0])


def open_when_free(path: Path) -> QdrantClient:
    """A finished run's process may still be exiting (its client unlocks the folder at exit)."""

    def try_open() -> QdrantClient | None:
        try:
            return QdrantClient(path=str(path))
        except RuntimeError:
            return None

    return wait_until(try_open, 30, "the embedded Qdrant folder to be free")


def qdrant_points(path: Path) -> list[dict[str, Any]]:
    client = open_when_free(path)
    try:
        [collection] = [c.name for c in client.get_collections().collections]
        points, _ = client.scroll(collection, limit=10_000, with_payload=True)
        return [p.payload or {} for p in points]
    finally:
        client.close()


def test_rag_sync_dispatches_to_thanos_schedules_fire_and_batches_wait_for_their_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    # Bootstrap twice: the second run changes nothing and does not fail.
    first = run_cli([sys_python(), "-m", "deployments.bootstrap"], cluster.cli_env)
    assert run_cli([sys_python(), "-m", "deployments.bootstrap"], cluster.cli_env) == first
    run_cli([*PREFECT, "--no-prompt", "deploy", "--all"], cluster.cli_env)
    client = cluster.client()
    with client:
        assert {p.name for p in client.read_work_pools()} >= {"oracle", "starlord", "thanos"}
        assert client.read_global_concurrency_limit_by_name("gpu:thanos").limit == 1
        quiet_schedules(client)

        # A schedule a few seconds out on starlord's health deployment: it must fire by itself.
        health = deployment_id(client, "health/starlord")
        for schedule in client.read_deployment_schedules(health):  # only ours may fire (not its */5 cron)
            client.delete_deployment_schedule(health, schedule.id)
        anchor = _now() + timedelta(seconds=8)
        client.create_deployment_schedules(
            health,
            [(IntervalSchedule(interval=timedelta(hours=1), anchor_date=anchor), True)],
            parameters={"state_file": str(tmp_path / "health_state.json")},
        )
        client.resume_deployment(health)

        for pool in ("oracle", "starlord", "thanos"):
            cluster.start_worker(pool)

        docs = tmp_path / "docs"
        docs.mkdir()
        for name, topic in TOPICS.items():
            write_document(docs / name, topic)
        parent = final_state(client, start_sync(cluster, docs), 240)
        assert parent.state and parent.state.type == StateType.COMPLETED, parent.state
        assert parent.work_pool_name == "oracle"
        children = runs_of(client, "ingest-batch/thanos")
        assert len(children) == 2  # 5 documents, 3 per batch
        assert {c.work_pool_name for c in children} == {"thanos"}
        assert all(c.state and c.state.type == StateType.COMPLETED for c in children)
        assert all(c.parent_task_run_id is not None for c in children)  # linked to rag-sync as subflows
        # Each batch held thanos's GPU slot (the pool's env names it; strict, so a missing limit would fail).
        holders = wait_until(lambda: gpu_slot_holders(client, "gpu:thanos", 2), 30, "gpu:thanos acquisitions")
        assert holders == {f"prefect.flow-run.{c.id}" for c in children}

        points = qdrant_points(cluster.qdrant_path)
        assert {p["doc_id"] for p in points} == set(TOPICS)
        assert len(points) == RagLedger(Database(cluster.ledger_url)).indexed_chunk_total()

        [fired] = wait_until(lambda: _finished(runs_of(client, "health/starlord")), 120, "the scheduled health run")
        assert fired.auto_scheduled and fired.work_pool_name == "starlord"
        assert fired.state and fired.state.type == StateType.COMPLETED, fired.state

        # Without the thanos worker, dispatched batches wait; with it back, they finish.
        cluster.workers["thanos"].stop()
        for name, topic in LATER.items():
            write_document(docs / name, topic)
        second = start_sync(cluster, docs)
        waiting = wait_until(
            lambda: [r for r in runs_of(client, "ingest-batch/thanos") if r.id not in {c.id for c in children}],
            60,
            "the second sync's batch",
        )
        time.sleep(5)
        for run in (client.read_flow_run(r.id) for r in waiting):
            assert run.state and run.state.type in (StateType.SCHEDULED, StateType.PENDING), run.state
        assert client.read_flow_run(second).state.type == StateType.RUNNING
        cluster.start_worker("thanos")
        parent = final_state(client, second, 180)
        assert parent.state and parent.state.type == StateType.COMPLETED, parent.state
        points = qdrant_points(cluster.qdrant_path)
        assert {p["doc_id"] for p in points} == set(TOPICS) | set(LATER)
    print(f"end-to-end took {time.monotonic() - t0:.0f} s")


def gpu_slot_holders(client: SyncPrefectClient, limit: str, at_least: int) -> set[str]:
    """Flow runs that acquired ``limit``, from the events Prefect emits on each acquisition."""
    flt = EventFilter(event=EventNameFilter(name=["prefect.concurrency-limit.acquired"]))
    events = [e for e in client.read_events(filter=flt, limit=50).events if e.resource.name == limit]
    runs = {r.id for e in events for r in e.related if r.id.startswith("prefect.flow-run.")}
    return runs if len(events) >= at_least else set()


def _finished(runs: list[FlowRun]) -> list[FlowRun]:
    return [r for r in runs if r.state and r.state.is_final()]


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def sys_python() -> str:
    import sys

    return sys.executable
