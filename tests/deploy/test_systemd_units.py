"""What the shipped systemd units and env examples configure, read as systemd reads them (tests/e2e/systemd.py);
test_units_on_server.py starts them for real."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import prefect.settings
import pytest

from flows.ops.inventory import DEFAULT_SERVICES
from tests.e2e.systemd import parse_env_file, read_service

SYSTEMD = Path(__file__).resolve().parents[2] / "deployments" / "systemd"
PREFECT_DEFAULT_WORKER_PORT = 8080  # what --with-healthcheck binds unless told otherwise


def example(name: str) -> dict[str, str]:
    return parse_env_file((SYSTEMD / name).read_text())


@pytest.mark.parametrize(
    ("unit", "env_example"), [("prefect-server.service", "server.env.example"), ("prefect-worker@.service", None)]
)
def test_every_prefect_setting_named_is_one_of_prefects(unit: str, env_example: str | None) -> None:
    names = set(read_service(SYSTEMD / unit, "thanos").environment)
    names |= set(example(env_example or "worker.env.example"))
    for name in sorted(n for n in names if n.startswith("PREFECT_")):
        getattr(prefect.settings, name)  # AttributeError "... is not a Prefect setting"


def test_the_worker_health_check_listens_on_loopback_on_a_port_no_cluster_service_uses() -> None:
    unit = read_service(SYSTEMD / "prefect-worker@.service", "thanos")
    assert "--with-healthcheck" in unit.argv
    env = unit.environment
    assert env["PREFECT_WORKER_WEBSERVER_HOST"] == "127.0.0.1"
    taken = {urlsplit(s.target).port for s in DEFAULT_SERVICES if "://" in s.target} | {PREFECT_DEFAULT_WORKER_PORT}
    assert int(env["PREFECT_WORKER_WEBSERVER_PORT"]) not in taken


def test_the_server_listens_on_a_private_address_with_the_api_auth_on() -> None:
    unit = read_service(SYSTEMD / "prefect-server.service")
    assert "--host" not in unit.argv  # the address comes from server.env
    assert ("/etc/swarm/server.env", True) in unit.environment_files  # required: no file, no server
    server_env = example("server.env.example")
    assert server_env["PREFECT_SERVER_API_HOST"] not in ("0.0.0.0", "::", "")
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"]
    assert example("worker.env.example")["PREFECT_API_AUTH_STRING"] == server_env["PREFECT_SERVER_API_AUTH_STRING"]
