"""The cluster on the test hosts (tests/e2e/netns.py), started as the project's units and env examples say:
a scratch PostgreSQL and the Prefect server (API auth on) on oracle, and one worker per node. The env files
under each node's /etc/swarm are rendered from the examples with this test's secrets and few changes."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable

import psycopg

from testkit.cluster import REPO, Proc, wait_healthy, wait_until
from tests.e2e.netns import RUNNER_ADDRESS, SUBNET, Host, Network
from tests.e2e.systemd import BASE_ENV, Service, read_service, render_env

SYSTEMD = REPO / "deployments" / "systemd"
VENV = "/srv/swarm/.venv/bin"
HOME = "/var/lib/swarm"  # the service user's home on every node
PG_DATA = "/srv/postgres"


def _read_on(host: Host) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        file = host.path(path)
        return file.read_text() if file.exists() else None

    return read


class Cluster:
    def __init__(self, network: Network) -> None:
        self.hosts = network.hosts
        self.oracle = network.hosts["oracle"]
        self.api_auth = f"swarm:{secrets.token_urlsafe(18)}"
        self.ledger_password = secrets.token_urlsafe(18)
        self.prefect_db_password = secrets.token_urlsafe(18)
        self.procs: dict[str, Proc] = {}
        server = read_service(SYSTEMD / "prefect-server.service")
        self.api_url = f"http://{self.oracle.address}:{server.argv[server.argv.index('--port') + 1]}/api"
        self.admin_url = f"postgresql://postgres@{self.oracle.address}:5432/postgres"
        for host in self.hosts.values():
            host.path(HOME).mkdir(parents=True)
            host.path("/etc/swarm").mkdir()

    # --- oracle's services ------------------------------------------------------------------------
    def start_postgres(self) -> None:
        """A scratch cluster on oracle: password auth for the cluster's roles, the test process (the machine
        at the bridge's address) trusted as postgres to create them."""
        self.oracle.path(PG_DATA).mkdir()
        shutil.chown(self.oracle.path(PG_DATA), "postgres", "postgres")
        initdb = ["initdb", "-D", f"{PG_DATA}/data", "-U", "postgres", "--auth=trust", "--locale=C.UTF-8"]
        self.oracle.run(["runuser", "-u", "postgres", "--", *initdb], BASE_ENV)
        self.oracle.path(f"{PG_DATA}/data/pg_hba.conf").write_text(
            f"host all postgres {RUNNER_ADDRESS}/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            f"host all all {SUBNET}.0/24 scram-sha-256\n"
        )
        settings = {
            "listen_addresses": f"127.0.0.1,{self.oracle.address}",
            "unix_socket_directories": "",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
        }
        flags = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        cmd = ["runuser", "-u", "postgres", "--", "postgres", "-D", f"{PG_DATA}/data", *flags]
        self.procs["postgres"] = self.oracle.start("postgres", cmd, BASE_ENV)

        def accepting() -> bool:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                return False

        wait_until(accepting, 60, "PostgreSQL on oracle")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for role, password in (("swarm", self.ledger_password), ("prefect", self.prefect_db_password)):
                conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
                conn.execute(f"CREATE DATABASE {role} OWNER {role}")

    def start_server(self) -> None:
        values: dict[str, str | None] = {
            "PREFECT_SERVER_API_HOST": self.oracle.address,
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                f"postgresql+asyncpg://prefect:{self.prefect_db_password}@127.0.0.1:5432/prefect"
            ),
            "PREFECT_SERVER_API_AUTH_STRING": self.api_auth,
            # test speed: the scheduler looks for due runs every 2 s (not 60), so a schedule fires in the test
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_UI_ENABLED": "false",  # test speed: nothing here opens the UI
        }
        text = render_env((SYSTEMD / "server.env.example").read_text(), values)
        self.oracle.path("/etc/swarm/server.env").write_text(text)
        self.procs["server"] = self._start_unit(self.oracle, "server", read_service(SYSTEMD / "prefect-server.service"))

        wait_healthy(self.procs["server"], f"{self.api_url}/health", 180, "the Prefect server on oracle")

    # --- every node -------------------------------------------------------------------------------
    def write_worker_env(self, per_node: dict[str, dict[str, str]]) -> None:
        shared = render_env(
            (SYSTEMD / "worker.env.example").read_text(),
            {
                "PREFECT_API_AUTH_STRING": self.api_auth,
                "PREFECT_WORKER_QUERY_SECONDS": "1",  # test speed: poll every second, not every 10
                "SWARM_QDRANT_BLOCK": None,  # no Qdrant server here: thanos's embedded one under its data dir
            },
        )
        for name, host in self.hosts.items():
            host.path("/etc/swarm/worker.env").write_text(shared)
            host.path(f"/etc/swarm/worker-{name}.env").write_text(render_env("", dict(per_node.get(name, {}))))

    def operator_env(self) -> dict[str, str]:
        """The shell of an operator on oracle: the worker's settings (API URL and auth), and a SWARM_REPO
        that must not leak into the deployments."""
        env = read_service(SYSTEMD / "prefect-worker@.service", "oracle").env(_read_on(self.oracle), HOME)
        return {**env, "SWARM_REPO": "/nonexistent", "PREFECT_HOME": f"{HOME}/.prefect"}

    def start_worker(self, node: str) -> None:
        unit = read_service(SYSTEMD / "prefect-worker@.service", node)
        self.procs[f"worker-{node}"] = self._start_unit(self.hosts[node], "worker", unit)

    def stop(self, name: str) -> None:
        self.procs.pop(name).stop()

    def stop_all(self) -> None:
        for name in sorted(self.procs, key=lambda n: (n == "postgres", n == "server")):  # postgres last
            self.procs[name].stop()

    def logs_tail(self) -> str:
        return "\n\n".join(f"== {p.name}\n{p.tail()}" for p in self.procs.values())

    def _start_unit(self, host: Host, name: str, unit: Service) -> Proc:
        return host.start(name, unit.argv, unit.env(_read_on(host), HOME), cwd=unit.working_directory)
