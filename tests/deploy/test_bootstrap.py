"""The bootstrap command against the session's Prefect API: everything it creates exists as specified, a
second run changes nothing, a node block edited by the user is kept and drives its pool's env, and the
alerting automations post to SWARM_ALERTMANAGER_URL's /api/v2/alerts, or are left out with a warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import get_client
from prefect.automations import Automation
from prefect.blocks.webhook import Webhook
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.states import Pending, Running

from blocks import NodeSettings
from deployments import bootstrap
from flows.common.blocks import find_block
from tests.deploy.test_prefect_yaml import flow_of

ALERTING = {"swarm-notify-service-state", "swarm-notify-backup-failed", "swarm-notify-backup-missing"}
BLOCK_ID = "0" * 32


def test_the_automation_files_parse_and_say_what_they_should() -> None:
    automations = {
        a.name: a for a in bootstrap.load_automations(bootstrap.HERE / "automations", {"swarm-alertmanager": BLOCK_ID})
    }
    zombie = automations["swarm-crash-zombie-flow-runs"]
    assert zombie.trigger.posture == "Proactive" and zombie.trigger.within.total_seconds() == 540
    assert zombie.actions[0].type == "change-flow-run-state"
    down = automations["swarm-notify-service-state"]
    assert "swarm.service.down" in down.trigger.expect
    assert "swarm.backup.failed" in automations["swarm-notify-backup-failed"].trigger.expect
    for name in ALERTING:  # Alertmanager's API through the webhook block (a notification block posts its own JSON)
        [action] = automations[name].actions
        assert action.type == "call-webhook" and action.block_document_id.hex == BLOCK_ID


def test_an_unknown_block_reference_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        (bootstrap.HERE / "automations" / "backup-failed.yaml")
        .read_text()
        .replace("block:swarm-alertmanager", "block:nope")
    )
    with pytest.raises(KeyError, match="nope"):
        bootstrap.load_automations(tmp_path, {"swarm-alertmanager": BLOCK_ID})


def test_the_alertmanager_url_names_its_alerts_endpoint() -> None:
    for base in ("http://oracle:9093", "http://oracle:9093/", " http://oracle:9093/api/v2/alerts "):
        assert bootstrap.alertmanager_alerts_url(base) == "http://oracle:9093/api/v2/alerts"
    with pytest.raises(bootstrap.ConfigError):
        bootstrap.alertmanager_alerts_url("oracle:9093")  # no scheme: Prefect would post nowhere


def pool_env(client: Any, pool: str) -> dict[str, str]:
    return client.read_work_pool(pool).base_job_template["variables"]["properties"]["env"]["default"]


def test_every_pool_file_describes_its_own_node() -> None:
    for pool in bootstrap.POOLS:
        node = NodeSettings(**json.loads((bootstrap.HERE / "work-pools" / f"{pool}.json").read_text())["node"])
        assert node.node == pool
        assert set(node.env()) >= {"SWARM_NODE"} and "SWARM_DATA_DIR" not in node.env()  # paths: worker.env


def forget_alert_block() -> None:
    if find_block(Webhook, bootstrap.ALERT_BLOCK) is not None:
        Webhook.delete(bootstrap.ALERT_BLOCK)


def test_bootstrap_twice_gives_the_same_pools_limits_blocks_and_automations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_ALERTMANAGER_URL", "http://127.0.0.1:1")  # nothing listens: posts fail, harmlessly
    first = bootstrap.bootstrap()
    assert set(first["automations"]) == {"swarm-crash-zombie-flow-runs", *ALERTING}
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


def test_the_alert_block_posts_json_to_alertmanager_and_follows_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    forget_alert_block()
    monkeypatch.setenv("SWARM_ALERTMANAGER_URL", "http://am-one:9093")
    first = bootstrap.ensure_alert_block()
    block = Webhook.load(bootstrap.ALERT_BLOCK)
    assert block.method == "POST" and block.url.get_secret_value() == "http://am-one:9093/api/v2/alerts"
    assert block.headers.get_secret_value() == {"Content-Type": "application/json"}  # else Alertmanager says 415
    monkeypatch.setenv("SWARM_ALERTMANAGER_URL", "http://am-two:9093/")
    assert bootstrap.ensure_alert_block() == first  # the same block, so the automations keep pointing at it
    assert Webhook.load(bootstrap.ALERT_BLOCK).url.get_secret_value() == "http://am-two:9093/api/v2/alerts"
    monkeypatch.delenv("SWARM_ALERTMANAGER_URL")
    assert bootstrap.ensure_alert_block() == first  # unset: the saved block (maybe edited in the UI) is kept


def test_without_an_alert_target_the_bootstrap_warns_and_leaves_out_the_alerting_automations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forget_alert_block()
    monkeypatch.delenv("SWARM_ALERTMANAGER_URL", raising=False)
    with get_client(sync_client=True) as client:
        assert bootstrap.ensure_automations(client, bootstrap.HERE / "automations") == ["swarm-crash-zombie-flow-runs"]
    err = capsys.readouterr().err
    assert "WARNING: no alert target" in err and "SWARM_ALERTMANAGER_URL=http://oracle:9093" in err


def test_a_bad_alertmanager_url_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWARM_ALERTMANAGER_URL", "oracle:9093")
    assert bootstrap.main([]) == 2
    assert capsys.readouterr().err == (
        "error: SWARM_ALERTMANAGER_URL must be Alertmanager's http(s) URL like http://oracle:9093, got 'oracle:9093'\n"
    )


def deploy(entry: dict[str, Any]) -> Any:
    """What `prefect deploy` sends for one prefect.yaml entry, as far as its concurrency goes (no pool: the
    server enforces the limit before any worker sees the run)."""
    deployment = RunnerDeployment.from_flow(
        flow_of(entry["entrypoint"]),
        entry["name"],
        concurrency_limit=ConcurrencyLimitConfig(**entry["concurrency_limit"]),
        parameters=entry.get("parameters") or {},
    )
    return deployment.apply()


def test_deployment_limits_are_named_after_their_deployments_and_keep_their_strategy() -> None:
    spec = yaml.safe_load((bootstrap.HERE.parent / "prefect.yaml").read_text())["deployments"]
    [health] = [d for d in spec if d["entrypoint"].endswith(":health") and d["name"] == "every-5-min"]
    [research] = [d for d in spec if d["entrypoint"].endswith(":research")]
    entries = {"deployment:health:every-5-min": health, "deployment:research:manual": research}
    with get_client(sync_client=True) as client:
        ids = {name: deploy(entry) for name, entry in entries.items()}
        assert client.read_deployment(ids["deployment:health:every-5-min"]).global_concurrency_limit.name == (
            f"deployment:{ids['deployment:health:every-5-min']}"  # what an operator cannot place
        )
        names = bootstrap.name_deployment_limits(client)
        assert set(entries) <= set(names)
        before = client.read_deployment(ids["deployment:health:every-5-min"]).global_concurrency_limit
        deploy(health)  # the next `prefect deploy`: the same limit, still named
        after = client.read_deployment(ids["deployment:health:every-5-min"]).global_concurrency_limit
        assert (after.id, after.name) == (before.id, "deployment:health:every-5-min")
        assert bootstrap.name_deployment_limits(client) == names
        # A second run while the first holds the slot: CANCEL_NEW cancels it, ENQUEUE makes it wait for the slot.
        outcome = {}
        for name, deployment_id in ids.items():
            first = client.create_flow_run_from_deployment(deployment_id)
            client.set_flow_run_state(first.id, Pending())
            assert client.set_flow_run_state(first.id, Running()).state.is_running()
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 1
            second = client.create_flow_run_from_deployment(deployment_id)
            state = client.set_flow_run_state(second.id, Pending()).state
            outcome[entries[name]["concurrency_limit"]["collision_strategy"]] = (state.type.value, state.name)
            for run in (first, second):
                client.delete_flow_run(run.id)
        assert outcome == {
            "CANCEL_NEW": ("CANCELLED", "Cancelled"),
            "ENQUEUE": ("SCHEDULED", "AwaitingConcurrencySlot"),
        }
        for deployment_id in ids.values():
            client.delete_deployment(deployment_id)


def test_each_drive_project_gets_a_rate_limit_reset_to_its_units() -> None:
    """One ``drive-units:<project>`` per Google project of the saved GoogleDriveCredentials blocks."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from blocks.gdrive import GoogleDriveCredentials
    from flows.rag.sources.gdrive_quota import DEFAULT_UNITS_PER_MINUTE

    key = {"type": "service_account", "project_id": "acme-drive", "client_email": "sync@acme-drive.example"}
    GoogleDriveCredentials(service_account_info=key).save("gdrive-quota-test", overwrite=True)
    name = "drive-units:acme-drive"
    with get_client(sync_client=True) as client:
        assert {"gpu:starlord", "gpu:thanos", name} <= set(bootstrap.ensure_limits(client))
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=7, slot_decay_per_second=0))
        bootstrap.ensure_limits(client)
        limit = client.read_global_concurrency_limit_by_name(name)
    assert limit.active and limit.limit == DEFAULT_UNITS_PER_MINUTE
    assert limit.slot_decay_per_second == pytest.approx(DEFAULT_UNITS_PER_MINUTE / 60)  # a rate limit: a minute's worth
