"""The bootstrap command against the session's Prefect API: everything it creates exists as specified, a
second run changes nothing, and a node block edited by the user is kept and drives its pool's env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.automations import Automation

from blocks import NodeSettings
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


def pool_env(client: Any, pool: str) -> dict[str, str]:
    return client.read_work_pool(pool).base_job_template["variables"]["properties"]["env"]["default"]


def test_every_pool_file_describes_its_own_node() -> None:
    for pool in bootstrap.POOLS:
        node = NodeSettings(**json.loads((bootstrap.HERE / "work-pools" / f"{pool}.json").read_text())["node"])
        assert node.node == pool
        assert set(node.env()) >= {"SWARM_NODE"} and "SWARM_DATA_DIR" not in node.env()  # paths: worker.env


def test_bootstrap_twice_gives_the_same_pools_limits_blocks_and_automations() -> None:
    first = bootstrap.bootstrap()
    assert first["node_blocks"] == ["node-oracle", "node-starlord", "node-thanos"]
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            "gpu:thanos",
            __import__("prefect.client.schemas.actions").client.schemas.actions.GlobalConcurrencyLimitUpdate(limit=3),
        )
        assert pool_env(client, "starlord") == NodeSettings.load("node-starlord").env()
    # The user edits a node block (UI: Blocks); the next bootstrap keeps it and the pool follows it.
    thanos = NodeSettings.load("node-thanos")
    thanos.cuda_visible_devices, thanos.hf_home, thanos.data_dir = "1", "/srv/models/hf", "/srv/thanos-data"
    thanos.save("node-thanos", overwrite=True)
    second = bootstrap.bootstrap()
    assert first == second
    assert NodeSettings.load("node-thanos").cuda_visible_devices == "1"
    with get_client(sync_client=True) as client:
        pools = {p.name: p for p in client.read_work_pools()}
        assert {"oracle", "starlord", "thanos"} <= set(pools)
        assert pools["thanos"].type == "process"
        assert pool_env(client, "thanos") == {
            "SWARM_NODE": "thanos",
            "SWARM_GPU_SLOT": "gpu:thanos",
            "CUDA_VISIBLE_DEVICES": "1",
            "HF_HOME": "/srv/models/hf",
            "SWARM_DATA_DIR": "/srv/thanos-data",
        }
        assert pool_env(client, "starlord")["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
        for name in ("gpu:starlord", "gpu:thanos"):
            assert client.read_global_concurrency_limit_by_name(name).limit == 1  # reset to one slot
        for name in first["automations"]:
            assert len(client.read_automations_by_name(name)) == 1
    assert Automation.read(name="swarm-crash-zombie-flow-runs").enabled
