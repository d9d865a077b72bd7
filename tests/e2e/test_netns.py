"""The test hosts themselves: they reach each other by name over the bridge and nothing else, each sees only
its own folders, and nothing they made outlives a failing test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.cluster import REPO
from tests.e2e.netns import Network, leftovers

PY = "/srv/swarm/.venv/bin/python"
ENV = {"PATH": os.environ["PATH"]}
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()"


def test_hosts_reach_each_other_by_name_and_see_only_their_own_folders(network: Network) -> None:
    oracle, thanos = network.hosts["oracle"], network.hosts["thanos"]
    server = oracle.start("http", [PY, "-m", "http.server", "--bind", oracle.address, "8000"], ENV, cwd="/srv/swarm")
    try:
        fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
        for _ in range(50):
            done = subprocess.run(
                thanos.command([PY, "-c", fetch, "http://oracle:8000/README.md"]),
                env=ENV,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.returncode == 0:
                break
        assert done.stdout.startswith("# swarm-flows"), done.stderr
    finally:
        server.stop()
    # The machine's own loopback services (PostgreSQL here) are not on any host's network.
    refused = subprocess.run(thanos.command([PY, "-c", CONNECT, "127.0.0.1", "5432"]), env=ENV, capture_output=True)
    assert refused.returncode != 0

    oracle.path("/srv/swarm-data/only-on-oracle").write_text("x")
    assert oracle.run(["cat", "/srv/swarm-data/only-on-oracle"], ENV) == "x"
    assert not thanos.path("/srv/swarm-data/only-on-oracle").exists()
    assert thanos.run(["ls", "/srv/swarm-data"], ENV) == ""
    assert (thanos.path("/srv/swarm/pyproject.toml")).read_text() == (REPO / "pyproject.toml").read_text()
    thanos.path("/etc/swarm").mkdir()
    assert not Path("/etc/swarm").exists() and not oracle.path("/etc/swarm").exists()
    # Private: not the machine's /tmp with every node's test folder; only a checkout under /tmp keeps its path there.
    in_tmp = REPO.is_relative_to("/tmp")
    assert thanos.run(["ls", "/tmp"], ENV) == (f"{REPO.relative_to('/tmp').parts[0]}\n" if in_tmp else "")


INNER = """
import json, os, subprocess
from pathlib import Path
from tests.e2e.netns import Network

ENV = {"PATH": os.environ["PATH"]}

def _sleeper(net, name):
    proc = net.hosts["oracle"].start(name, ["sleep", "600"], ENV)
    with Path(os.environ["PIDS"]).open("a") as out:
        out.write(f"{proc.popen.pid} {net.hosts['oracle'].holder.popen.pid}\\n")

def test_fails_with_the_fixture(network):
    _sleeper(network, "sleeper")
    assert False, "deliberate"

def test_fails_outside_any_fixture(tmp_path):
    _sleeper(Network({"oracle": 1}, tmp_path), "orphan")  # only the session-finish hook removes this one
    assert False, "deliberate"
"""


@pytest.mark.slow
def test_nothing_outlives_a_failing_test(network: Network, tmp_path: Path) -> None:
    network.close()
    (tmp_path / "test_inner.py").write_text(INNER)
    pids = tmp_path / "pids"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PIDS": str(pids)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.e2e.conftest", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2 failed" in done.stdout, done.stdout + done.stderr
    started = [int(pid) for line in pids.read_text().split("\n") if line for pid in line.split()]
    assert len(started) == 4
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
    assert leftovers() == []
