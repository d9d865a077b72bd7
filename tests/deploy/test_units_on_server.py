"""The shipped units and prefect.yaml against a real Prefect server, each process started with the command line
and environment its systemd unit gives it (tests/e2e/systemd.py reads them) and env files rendered from the
examples: only the port, the folders and the service addresses differ from a node's.

- prefect-server.service listens where server.env says and answers no API request without the auth string;
- `prefect deploy --all` from a shell whose SWARM_REPO points nowhere stores no such path, and ships
  gdrive-hourly's schedule inactive;
- a prefect-worker@ worker, with the auth string from worker.env, runs a deployment from its own checkout,
  and its health check listens on 127.0.0.1:4210."""

from __future__ import annotations

import base64
import json
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import State
from prefect.client.schemas.responses import DeploymentResponse
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from testkit.cluster import PREFECT, REPO, Proc, clean_env, free_port, run_cli, wait_healthy, wait_until
from tests.conftest import PG_ADMIN_URL
from tests.e2e.systemd import Service, read_service, render_env

pytestmark = pytest.mark.slow

SYSTEMD = REPO / "deployments" / "systemd"
CHECKOUT = "/srv/swarm"  # where the units expect the checkout
WORKER_HEALTH = ("127.0.0.1", 4210)
POOLS = ("oracle", "starlord", "thanos")


@dataclass
class Server:
    url: str
    auth: str
    root: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(self.auth.encode()).decode()}

    @contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """Prefect's own client with the CLI's settings (it retries what the server asks it to)."""
        settings = {PREFECT_API_URL: self.url, PREFECT_API_AUTH_STRING: self.auth}
        with temporary_settings(settings), get_client(sync_client=True) as client:
            yield client


def command(unit: Service) -> list[str]:
    """The unit's ExecStart, with this venv's prefect for the checkout's."""
    assert unit.argv[0] == f"{CHECKOUT}/.venv/bin/prefect", unit.argv
    return [*PREFECT, *unit.argv[1:]]


def env_of(unit: Service, files: dict[str, str], home: Path) -> dict[str, str]:
    """The unit's environment on a node whose /etc/swarm holds ``files``; PYTHONPATH and the offline switches
    as every process of the test harness has them (clean_env)."""
    return clean_env(**unit.env(files.get, str(home)))


@pytest.fixture(scope="module")
def prefect_db() -> Iterator[str]:
    """A scratch PostgreSQL database for Prefect, as on oracle."""
    name = f"prefect_{secrets.token_hex(5)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, prefect_db: str) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("units")
    (root / "logs").mkdir()
    unit = read_service(SYSTEMD / "prefect-server.service")
    auth = f"swarm:{secrets.token_urlsafe(24)}"
    server_env = render_env(
        (SYSTEMD / "server.env.example").read_text(),
        {
            "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",  # this machine's "private address"
            "PREFECT_SERVER_API_AUTH_STRING": auth,
            "PREFECT_HOME": str(root / "server-home"),
            "PREFECT_UI_ENABLED": "false",  # test speed
            # No scheduled runs: a health/every-5-min run the scheduler makes at :00/:05 would take the deployment's
            # one slot (CANCEL_NEW) and cancel the run this module starts. Schedules fire in the three-host test.
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        },
    )
    args = command(unit)
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    env = env_of(unit, {"/etc/swarm/server.env": server_env}, root)
    proc = Proc("server", args, env, root / "logs", cwd=REPO)
    url = f"http://127.0.0.1:{port}/api"

    try:
        wait_healthy(proc, f"{url}/health", 180, "the Prefect server's /api/health")
        yield Server(url, auth, root)
    finally:
        proc.stop()


def listening(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}


def test_the_server_listens_on_its_address_and_refuses_requests_without_the_auth_string(server: Server) -> None:
    assert listening(int(server.url.split(":")[2].split("/")[0])) == {"127.0.0.1"}
    secrets_query = {"include_secrets": True}
    wrong = "Basic " + base64.b64encode(b"swarm:wrong").decode()
    for headers in ({}, {"Authorization": wrong}):
        for method, path, body in (
            ("POST", "/block_documents/filter", secrets_query),
            ("POST", "/deployments/filter", {}),
            ("GET", "/admin/settings", None),
        ):
            response = httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=10)
            assert response.status_code == 401, (path, headers, response.text)
    response = httpx.post(f"{server.url}/block_documents/filter", json=secrets_query, headers=server.headers())
    assert (response.status_code, response.json()) == (200, [])


@pytest.fixture(scope="module")
def deployed(server: Server) -> list[DeploymentResponse]:
    """`prefect deploy --all` from an operator's shell (API URL and auth string from worker.env) that has
    SWARM_REPO pointing nowhere; the stored deployments, read back through the API."""
    cli = clean_env(
        PREFECT_API_URL=server.url,
        PREFECT_API_AUTH_STRING=server.auth,
        PREFECT_HOME=str(server.root / "cli-home"),
        SWARM_REPO="/nonexistent",
    )
    for pool in POOLS:
        run_cli([*PREFECT, "work-pool", "create", pool, "--type", "process", "--overwrite"], cli)
    run_cli([*PREFECT, "--no-prompt", "deploy", "--all"], cli, timeout=480)
    with server.client() as client:
        return client.read_deployments()


def test_deploy_leaves_the_checkout_to_each_node_and_ships_only_what_needs_input_inactive(
    deployed: list[DeploymentResponse],
) -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert sorted(d.name for d in deployed) == sorted(d["name"] for d in spec["deployments"])  # every one deployed
    for deployment in deployed:
        assert "/nonexistent" not in json.dumps(deployment.pull_steps), deployment.name
        assert deployment.pull_steps == spec["pull"], deployment.name  # stored as written, resolved on the node
    active = {s.slug: s.active for d in deployed for s in d.schedules}
    # Only the schedules that need the operator's input first wait: the Drive's folder ids, the shared batch folder.
    assert {slug for slug, on in active.items() if not on} == {"rag-gdrive-hourly", "rag-summaries-nightly"}
    assert {"rag-local-hourly", "health-every-5-min", "backup-nightly"} <= {slug for slug, on in active.items() if on}


def test_a_worker_started_as_its_unit_says_runs_a_deployment_from_its_own_checkout(
    server: Server, deployed: list[DeploymentResponse]
) -> None:
    with socket.socket() as probe:  # the unit's fixed port: a leftover worker would answer in its place
        assert probe.connect_ex(WORKER_HEALTH) != 0, "something already listens on 127.0.0.1:4210"
    root = server.root
    checkout = root / "checkout"  # this node's checkout is not at /srv/swarm
    checkout.symlink_to(REPO)
    unit = read_service(SYSTEMD / "prefect-worker@.service", "oracle")
    worker_env = render_env(
        (SYSTEMD / "worker.env.example").read_text(),
        {
            "PREFECT_API_URL": server.url,
            "PREFECT_API_AUTH_STRING": server.auth,
            "PREFECT_WORKER_QUERY_SECONDS": "1",  # test speed
            "SWARM_DATA_DIR": str(root / "data"),
            "SWARM_LEDGER_URL": f"sqlite:///{root / 'ledger.db'}",
            "SWARM_LEDGER_BLOCK": None,  # no blocks saved on this server
            "SWARM_QDRANT_BLOCK": None,
        },
    )
    node_env = render_env("", {"SWARM_REPO": str(checkout), "PREFECT_HOME": str(root / "worker-home")})
    files = {"/etc/swarm/worker.env": worker_env, "/etc/swarm/worker-oracle.env": node_env}
    worker = Proc("worker-oracle", command(unit), env_of(unit, files, root), root / "logs", cwd=REPO)
    try:
        health_url = f"http://{WORKER_HEALTH[0]}:{WORKER_HEALTH[1]}/health"
        wait_healthy(worker, health_url, 60, "the worker's health check on 127.0.0.1:4210")
        assert listening(WORKER_HEALTH[1]) == {"127.0.0.1"}
        [health] = [d for d in deployed if d.name == "every-5-min"]
        params = {
            "inventory": [{"name": "disk-root", "kind": "disk", "node": "oracle", "path": "/"}],
            "textfile": str(root / "swarm_health.prom"),
            "state_file": str(root / "health_state.json"),
        }
        with server.client() as client:
            run = client.create_flow_run_from_deployment(health.id, parameters=params)

            def final() -> State | None:
                state = client.read_flow_run(run.id).state
                return state if state and state.is_final() else None

            state = wait_until(final, 240, "the health run on the oracle worker")
        assert state.is_completed(), (state, worker.tail())
        assert (root / "swarm_health.prom").exists()  # the flow itself ran, not only its process
    finally:
        worker.stop()
