"""The health flow end to end: fake services, real PostgreSQL and Redis, a ledger, a metrics textfile."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect.artifacts import Artifact

from blocks import PostgresLedger
from flows.common.errors import ConfigError
from flows.common.events import SERVICE_DOWN, SERVICE_RECOVERED
from flows.ops import health as health_module
from flows.ops.health import health
from testkit.ops_services import fake_cluster
from tests.flows.ops.conftest import PG_ADMIN_URL


def inventory(urls: dict[str, str], tmp_path: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"name": k, "kind": k, "node": "oracle", "url": u} for k, u in urls.items()]
    items += [
        {"name": "postgres", "kind": "postgres", "node": "oracle", "dsn": PG_ADMIN_URL},
        {"name": "redis", "kind": "redis", "node": "oracle", "url": "redis://127.0.0.1:6379/0"},
        {
            "name": "disk",
            "kind": "disk",
            "node": "oracle",
            "path": str(tmp_path),
            "crit_free": 0,
            "warn_free": 0,
        },
        {"name": "gpu", "kind": "gpu", "node": "thanos"},  # another node's GPU: skipped here
    ]
    return items


def test_health_flow_reports_down_once_and_recovery_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        health_module,
        "emit_event",
        lambda event, resource, payload: sent.append((event, resource["prefect.resource.id"])),
    )
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    textfile = tmp_path / "prom" / "swarm_health.prom"
    with fake_cluster(overrides={"vault": {"/v1/sys/health": (503, {"sealed": True})}}) as urls:
        params = {
            "inventory": inventory(urls, tmp_path),
            "ledger_url": ledger,
            "textfile": str(textfile),
            "local_node": "oracle",
            "timeout_s": 2.0,
            "state_file": str(tmp_path / "state.json"),
        }
        first = health(**params)
        assert first["down"] == ["oracle.vault"]
        assert first["counts"]["up"] == 14 and first["counts"]["skipped"] == 1
        assert sent == [(SERVICE_DOWN, "swarm.service.oracle.vault")]
        metrics = textfile.read_text()
        assert 'swarm_service_up{service="vault",node="oracle",kind="vault"} 0' in metrics
        assert 'swarm_service_up{service="postgres",node="oracle",kind="postgres"} 1' in metrics

        artifact = Artifact.get("health-report")
        assert artifact is not None and '"status": "down"' in str(artifact.data)

        second = health(**params)  # still down: no new event
        assert second["down"] == ["oracle.vault"] and second["events"] == []
        assert len(sent) == 1

    with fake_cluster() as urls:  # vault unsealed
        params["inventory"] = inventory(urls, tmp_path)
        third = health(**params)
    assert third["down"] == []
    assert sent[-1] == (SERVICE_RECOVERED, "swarm.service.oracle.vault")
    assert len(sent) == 2


def test_health_flow_rejects_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown kind"):
        health(inventory=[{"name": "x", "kind": "nope", "node": "oracle", "url": "http://x"}],
               ledger_url=f"sqlite:///{tmp_path / 'l.db'}")  # fmt: skip
    with pytest.raises(ConfigError, match="cannot read inventory file"):
        health(inventory=str(tmp_path / "missing.yaml"), ledger_url=f"sqlite:///{tmp_path / 'l.db'}")
    with pytest.raises(ConfigError, match="is not supported"):
        health(ledger_url="mysql://x/y")


def test_health_flow_keeps_alerting_when_the_ledger_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(health_module, "emit_event", lambda event, resource, payload: sent.append(event))
    params = {
        "inventory": [{"name": "vault", "kind": "vault", "node": "oracle", "url": "http://127.0.0.1:1"}],
        "ledger_url": "postgresql://postgres@127.0.0.1:1/ledger",  # nothing listens there
        "textfile": str(tmp_path / "m.prom"),
        "state_file": str(tmp_path / "state.json"),
    }
    assert health(**params)["down"] == ["oracle.vault"]
    assert health(**params)["events"] == []  # the mirror file remembers the first alert
    assert sent == [SERVICE_DOWN]


def test_a_ledger_block_wins_over_ledger_url_and_its_password_stays_out_of_the_logs(
    tmp_path: Path, pg_ledger_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(health_module, "emit_event", lambda **_kw: None)
    password = "health-ledger-pw-must-not-leak"
    PostgresLedger(url=pg_ledger_url, password=password).save("health-ledger", overwrite=True)
    params = {
        "inventory": [{"name": "vault", "kind": "vault", "node": "oracle", "url": "http://127.0.0.1:1"}],
        "ledger_url": f"sqlite:///{tmp_path / 'unused.db'}",
        "textfile": str(tmp_path / "m.prom"),
        "state_file": str(tmp_path / "state.json"),
    }
    with caplog.at_level(logging.INFO):
        assert health(**params, ledger_block="health-ledger")["down"] == ["oracle.vault"]
    with psycopg.connect(pg_ledger_url) as conn:  # the block's database holds the state
        assert conn.execute("SELECT service_key, status FROM health_state").fetchall() == [("oracle.vault", "down")]
    assert not (tmp_path / "unused.db").exists()
    assert password not in caplog.text

    with pytest.raises(ConfigError, match=r"^ledger_block: no PostgresLedger block named 'nope'"):
        health(**params, ledger_block="nope")
