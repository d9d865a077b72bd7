"""The unit reader the three-host test starts services with: it must say what systemd would run."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.cluster import REPO
from tests.e2e.systemd import BASE_ENV, parse_env_file, read_service, render_env

UNIT = """[Unit]
Description=x %i
[Service]
# a comment
WorkingDirectory=/srv/swarm
EnvironmentFile=/etc/swarm/worker.env
EnvironmentFile=-/etc/swarm/worker-%i.env
Environment=SWARM_REPO=/srv/swarm
Environment="A=two words" B=2
ExecStart=/srv/swarm/.venv/bin/prefect worker start --pool %i --name %i-1 --label "a b" --pct 100%%
[Install]
Environment=IGNORED=1
"""


def test_reads_exec_start_environment_and_files(tmp_path: Path) -> None:
    (tmp_path / "u.service").write_text(UNIT)
    unit = read_service(tmp_path / "u.service", "thanos")
    assert unit.argv[1:] == [
        "worker",
        "start",
        "--pool",
        "thanos",
        "--name",
        "thanos-1",
        "--label",
        "a b",
        "--pct",
        "100%",
    ]
    assert unit.working_directory == "/srv/swarm"
    assert unit.environment == {"SWARM_REPO": "/srv/swarm", "A": "two words", "B": "2"}
    assert unit.environment_files == [("/etc/swarm/worker.env", True), ("/etc/swarm/worker-thanos.env", False)]

    files = {"/etc/swarm/worker.env": "# shared\nSWARM_REPO=/elsewhere\nQ='quoted'\n"}
    env = unit.env(files.get, home="/var/lib/swarm")
    # as in systemd: the env files win over Environment=, and a missing optional file is skipped
    assert env == BASE_ENV | {
        "HOME": "/var/lib/swarm",
        "SWARM_REPO": "/elsewhere",
        "A": "two words",
        "B": "2",
        "Q": "quoted",
    }
    with pytest.raises(AssertionError, match=r"worker\.env"):
        unit.env({}.get, home="/")


def test_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    for line in ("ExecStart=/bin/x %n", "ExecStart=-/bin/x", "ExecStart=/bin/x \\"):
        (tmp_path / "u.service").write_text(f"[Service]\n{line}\n")
        with pytest.raises(ValueError):
            read_service(tmp_path / "u.service", "oracle")


def test_the_project_units_parse() -> None:
    worker = read_service(REPO / "deployments/systemd/prefect-worker@.service", "starlord")
    assert worker.argv[1:5] == ["worker", "start", "--pool", "starlord"]
    server = read_service(REPO / "deployments/systemd/prefect-server.service")
    assert server.argv[1:3] == ["server", "start"]


def test_render_env_replaces_drops_and_appends() -> None:
    example = "# keep me\nA=1\nB=2\n\n# B=commented\nC=3\n"
    out = render_env(example, {"A": "10", "B": None, "D": "4"})
    assert out == "# keep me\nA=10\n\n# B=commented\nC=3\nD=4\n"
    assert parse_env_file(out) == {"A": "10", "C": "3", "D": "4"}
