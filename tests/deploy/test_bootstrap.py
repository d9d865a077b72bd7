"""The bootstrap command against the session's Prefect API: everything it creates exists as specified, and
a second run changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import get_client
from prefect.automations import Automation

from deployments import bootstrap


def test_the_automation_files_parse_and_say_what_they_should() -> None:
    automations = {
        a.name: a for a in bootstrap.load_automations(bootstrap.HERE / "automations", {"swarm-alerts": "0" * 32})
    }
    zombie = automations["swarm-crash-zombie-flow-runs"]
    assert zombie.trigger.posture == "Proactive" and zombie.trigger.within.total_seconds() == 540
    assert zombie.actions[0].type == "change-flow-run-state"
    down = automations["swarm-notify-service-state"]
    assert "swarm.service.down" in down.trigger.expect and down.actions[0].type == "send-notification"
    assert "swarm.backup.failed" in automations["swarm-notify-backup-failed"].trigger.expect


def test_an_unknown_block_reference_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        (bootstrap.HERE / "automations" / "backup-failed.yaml").read_text().replace("block:swarm-alerts", "block:nope")
    )
    with pytest.raises(KeyError, match="nope"):
        bootstrap.load_automations(tmp_path, {"swarm-alerts": "0" * 32})


def test_bootstrap_twice_gives_the_same_pools_limits_and_automations() -> None:
    first = bootstrap.bootstrap()
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            "gpu:thanos",
            __import__("prefect.client.schemas.actions").client.schemas.actions.GlobalConcurrencyLimitUpdate(limit=3),
        )
    second = bootstrap.bootstrap()
    assert first == second
    with get_client(sync_client=True) as client:
        pools = {p.name: p for p in client.read_work_pools()}
        assert {"oracle", "starlord", "thanos"} <= set(pools)
        assert pools["thanos"].type == "process"
        env = pools["thanos"].base_job_template["variables"]["properties"]["env"]["default"]
        assert env["SWARM_GPU_SLOT"] == "gpu:thanos"
        for name in ("gpu:starlord", "gpu:thanos"):
            assert client.read_global_concurrency_limit_by_name(name).limit == 1  # reset to one slot
        for name in first["automations"]:
            assert len(client.read_automations_by_name(name)) == 1
    assert Automation.read(name="swarm-crash-zombie-flow-runs").enabled
