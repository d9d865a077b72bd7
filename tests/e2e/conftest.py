"""The test hosts (tests/e2e/netns.py) as a fixture, removed after each test and again when the session ends
(a test killed half-way, or a network built outside the fixture, leaves nothing behind)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.netns import Network, release_hosts

NODES = {"oracle": 1, "starlord": 2, "thanos": 3}
FAILED = pytest.StashKey[bool]()  # set on a test item whose setup or call failed (fixtures print logs then)


def _can_make_hosts() -> bool:
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("ip", "unshare", "nsenter"))


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    if not _can_make_hosts():
        pytest.skip("the test hosts need root and ip, unshare and nsenter (iproute2, util-linux)")
    logs = tmp_path / "logs"
    logs.mkdir()
    network = Network(NODES, logs)
    try:
        yield network
    finally:
        network.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Under pytest-xdist only the controller, once every worker is done: a worker that finished early would
    # tear down the hosts of a test still running on another.
    if _can_make_hosts() and not hasattr(session.config, "workerinput"):
        release_hosts()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report = yield
    if call.when != "teardown":
        item.stash[FAILED] = item.stash.get(FAILED, False) or report.failed
    return report
