"""Alerts that arrive, on the real monitoring stack (Debian's Alertmanager, node-exporter, Prometheus).

Metric path: a health sweep with services down writes the node-exporter textfile, Prometheus scrapes it and
evaluates the shipped rules, and Alertmanager holds one group with every down service. Event path: a real
Prefect server with the bootstrap's automations turns the health flow's swarm.service.down into an alert in
Alertmanager's API, and with Alertmanager gone the failed post is an event. Every automation's payload
(firing and resolving) is rendered as the server renders it and accepted by the real Alertmanager."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import yaml

from deployments import bootstrap
from flows.ops import metrics
from flows.ops.health import health
from testkit.cluster import REPO, clean_env, run_cli, start_server, wait_until
from testkit.monitoring_stack import alert_groups, alertmanager, binary, node_exporter, prometheus
from testkit.ops_services import HEALTHY, fake_service

CLOSED = "http://127.0.0.1:1"  # nothing listens there: a probe finds the service down at once
ALERT_WAIT_S = 60


def sweep_params(tmp_path: Path, services: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "inventory": services,
        "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        "textfile": str(tmp_path / "textfile" / "swarm_health.prom"),
        "state_file": str(tmp_path / "state.json"),
        "local_node": "oracle",
        "timeout_s": 2.0,
    }


def alerts_of(alertmanager_url: str, alertname: str) -> list[dict[str, Any]]:
    return [a for g in alert_groups(alertmanager_url, alertname) for a in g["alerts"]]


def wait_for_alerts(alertmanager_url: str, alertname: str, count: int) -> list[dict[str, Any]]:
    """Alertmanager's groups of ``alertname`` once they hold ``count`` alerts in all."""

    def arrived() -> list[dict[str, Any]]:
        groups = alert_groups(alertmanager_url, alertname)
        return groups if sum(len(g["alerts"]) for g in groups) == count else []

    return wait_until(arrived, ALERT_WAIT_S, f"{count} {alertname} alerts in Alertmanager")


def test_the_health_metrics_go_where_debians_node_exporter_reads() -> None:
    shown = subprocess.run([binary("prometheus-node-exporter"), "--help"], capture_output=True, text=True, timeout=30)
    [folder] = re.findall(r'--collector\.textfile\.directory="([^"]+)"', shown.stdout + shown.stderr)
    assert Path(metrics.DEFAULT_TEXTFILE).parent == Path(folder)
    health_deployments = [
        d
        for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
        if d["entrypoint"] == "flows/ops/health.py:health"
    ]
    assert len(health_deployments) == 3
    for deployment in health_deployments:
        textfile = (deployment.get("parameters") or {}).get("textfile", metrics.DEFAULT_TEXTFILE)
        assert Path(textfile).parent == Path(folder), deployment["name"]


@pytest.mark.slow
def test_a_sweep_with_services_down_is_one_alert_group_in_alertmanager(tmp_path: Path) -> None:
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    with (
        fake_service(HEALTHY["grafana"]) as grafana,
        alertmanager(tmp_path) as am,
        node_exporter(textfiles, tmp_path) as exporter,
        prometheus(tmp_path, exporter, am),
    ):
        services = [
            {"name": "grafana", "kind": "grafana", "node": "oracle", "url": grafana.url},
            {"name": "vault", "kind": "vault", "node": "oracle", "url": CLOSED},
            {"name": "qdrant", "kind": "qdrant", "node": "starlord", "url": CLOSED},
        ]
        summary = health(**sweep_params(tmp_path, services))
        assert summary["down"] == ["oracle.vault", "starlord.qdrant"]
        [group] = wait_for_alerts(am, "SwarmServiceDown", 2)
    assert group["labels"] == {"alertname": "SwarmServiceDown"}  # grouped by alertname, not per service
    labels = sorted((a["labels"] for a in group["alerts"]), key=lambda lbl: lbl["service"])
    assert labels == [  # no instance/job: the same labels the Prefect automation sends
        {"alertname": "SwarmServiceDown", "severity": "critical", "service": s, "node": n, "kind": s}
        for s, n in (("qdrant", "starlord"), ("vault", "oracle"))
    ]
    assert all(a["status"]["state"] == "active" for a in group["alerts"])


def render_payload(automation: str, event: str | None, resource: dict[str, str], payload: dict[str, Any]) -> str:
    """An automation's payload as Prefect's server renders it (same template environment and filters)."""
    from prefect.server.events.actions import CallWebhook
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.server.utilities.user_templates import render_user_template
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    spec = yaml.safe_load((bootstrap.HERE / "automations" / f"{automation}.yaml").read_text())
    [action] = spec["actions"]
    CallWebhook._register_filters_if_needed()
    triggering = None
    if event:
        triggering = ReceivedEvent(
            id=uuid4(), occurred=datetime.now(UTC), event=event, resource=resource, payload=payload
        )
    with temporary_settings({PREFECT_UI_URL: "http://oracle:4200"}):  # links in alerts: the server's UI URL
        return asyncio.run(render_user_template(action["payload"], {"event": triggering, "automation": None}))


@pytest.mark.slow
def test_every_alerting_automation_posts_what_alertmanager_accepts(tmp_path: Path) -> None:
    service = {
        "prefect.resource.id": "swarm.service.oracle.vault",
        "prefect.resource.name": "oracle.vault",
        "swarm.kind": "vault",
        "swarm.node": "oracle",
    }
    backup = {"prefect.resource.id": "swarm.backup.postgres.swarm"}
    cases = [
        ("service-down", "swarm.service.down", service, {"status": "down", "detail": 'refused: "x" <y>'}),
        ("backup-failed", "swarm.backup.failed", backup, {"reason": "pg_restore: exit 1", "location": "/x"}),
        ("backup-missing", None, {}, {}),
    ]
    with alertmanager(tmp_path) as am:
        url = bootstrap.alertmanager_alerts_url(am)

        def post(payload: str) -> httpx.Response:  # what the call-webhook action does (one block per call)
            return asyncio.run(bootstrap.alert_webhook(url).call(payload=payload))

        for automation, event, resource, payload in cases:
            answer = post(render_payload(automation, event, resource, payload))
            assert answer.status_code == 200, f"{automation}: {answer.status_code} {answer.text}"
        vault = alerts_of(am, "SwarmServiceDown")
        assert [a["annotations"]["description"] for a in vault] == ['refused: "x" <y>']
        assert vault[0]["generatorURL"] == "http://oracle:4200/events?resource=swarm.service.oracle.vault"
        assert [a["labels"]["backup"] for a in alerts_of(am, "SwarmBackupFailed")] == ["postgres.swarm"]
        assert len(alerts_of(am, "SwarmBackupMissing")) == 1

        # The service's recovery and the series' next good backup resolve their alerts.
        assert post(render_payload("service-down", "swarm.service.recovered", service, {"status": "up"})).is_success
        assert post(render_payload("backup-failed", "swarm.backup.succeeded", backup, {"reason": None})).is_success
        for name in ("SwarmServiceDown", "SwarmBackupFailed"):
            wait_until(lambda name=name: not alerts_of(am, name), 10, f"{name} to be resolved")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``prefect server start`` (its triggers and actions services run the automations)."""
    work = tmp_path_factory.mktemp("alerting-prefect")
    server, url = start_server(work / "home", work)
    try:
        yield url
    finally:
        server.stop()


def run_health(env: dict[str, str], params: dict[str, Any]) -> dict[str, Any]:
    """The health flow in its own process, reporting to the server ``env`` names."""
    code = "import json, sys; from flows.ops.health import health; print(json.dumps(health(**json.loads(sys.argv[1]))))"
    return json.loads(run_cli([sys.executable, "-c", code, json.dumps(params)], env).splitlines()[-1])


def events_named(api_url: str, name: str) -> list[dict[str, Any]]:
    answer = httpx.post(f"{api_url}/events/filter", json={"filter": {"event": {"name": [name]}}}, timeout=10)
    answer.raise_for_status()
    return answer.json()["events"]


@pytest.mark.slow
def test_the_health_flows_events_reach_alertmanager_and_a_failed_post_is_an_event(
    prefect_server: str, tmp_path: Path
) -> None:
    with alertmanager(tmp_path) as am:
        env = clean_env(PREFECT_API_URL=prefect_server, SWARM_ALERTMANAGER_URL=am, PREFECT_HOME=str(tmp_path / "cli"))
        run_cli([sys.executable, "-m", "deployments.bootstrap"], env)
        down = [
            {"name": "vault", "kind": "vault", "node": "oracle", "url": CLOSED},
            {"name": "qdrant", "kind": "qdrant", "node": "starlord", "url": CLOSED},
        ]
        assert run_health(env, sweep_params(tmp_path, down))["events"] == [
            "swarm.service.down oracle.vault",
            "swarm.service.down starlord.qdrant",
        ]
        [group] = wait_for_alerts(am, "SwarmServiceDown", 2)  # one group: one notification
        vault = next(a for a in group["alerts"] if a["labels"]["service"] == "vault")
        assert vault["labels"] == {
            "alertname": "SwarmServiceDown",
            "severity": "critical",
            "service": "vault",
            "node": "oracle",
            "kind": "vault",
        }
        assert vault["annotations"]["summary"] == "oracle.vault is down"

    # Alertmanager is gone: the recoveries' posts fail, and the server says so in events the UI shows.
    with fake_service(HEALTHY["vault"]) as vault_up, fake_service(HEALTHY["qdrant"]) as qdrant_up:
        up = [{**down[0], "url": vault_up.url}, {**down[1], "url": qdrant_up.url}]
        assert len(run_health(env, sweep_params(tmp_path, up))["events"]) == 2

    def two_failed() -> list[dict[str, Any]]:
        failed = events_named(prefect_server, "prefect.automation.action.failed")
        return failed if len(failed) == 2 else []

    for failed in wait_until(two_failed, ALERT_WAIT_S, "two action.failed events"):
        assert failed["resource"]["prefect.resource.name"] == "swarm-notify-service-state"
        assert failed["payload"]["reason"].startswith("Webhook call failed: ConnectError")
