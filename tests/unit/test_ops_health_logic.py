"""Pure health logic: inventory parsing, verdicts, state changes and the metrics text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.common.errors import ConfigError
from flows.common.events import SERVICE_DOWN, SERVICE_RECOVERED
from flows.ops import judges as j
from flows.ops.health_state import ServiceState, advance
from flows.ops.inventory import DEFAULT_SERVICES, load_inventory
from flows.ops.metrics import format_metrics, write_textfile
from flows.ops.probes import HealthRow


def row(status: str, name: str = "vault", node: str = "oracle") -> HealthRow:
    return HealthRow(name, node, "vault", status, 1.0, "detail")


def test_defaults_cover_the_cluster() -> None:
    ports = {(s.node, s.name): s.target.rsplit(":", 1)[-1].split("/")[0] for s in DEFAULT_SERVICES if ":" in s.target}
    assert ports[("oracle", "postgres")] == "5432" and ports[("starlord", "vllm")] == "8000"
    assert ports[("starlord", "qdrant")] == "6333" and ports[("thanos", "searxng")] == "8080"
    assert ports[("oracle", "vault")] == "8200" and ports[("oracle", "prefect-api")] == "4200"
    assert len({s.key for s in DEFAULT_SERVICES}) == len(DEFAULT_SERVICES)


def test_inventory_from_yaml_json_and_dicts(tmp_path: Path) -> None:
    yml = tmp_path / "inv.yaml"
    yml.write_text("services:\n  - {name: pg, kind: postgres, node: oracle, dsn: 'postgresql://x/y', timeout_s: 2}\n")
    (svc,) = load_inventory(yml)
    assert (svc.kind, svc.target, svc.timeout_s) == ("postgres", "postgresql://x/y", 2.0)
    js = tmp_path / "inv.json"
    js.write_text(json.dumps([{"name": "ha", "kind": "haproxy", "node": "oracle", "url": "http://h", "path": "/m"}]))
    assert load_inventory(js)[0].target == "http://h"
    (gpu,) = load_inventory([{"name": "gpu", "kind": "gpu", "node": "thanos", "max_temp_c": 80}])
    assert gpu.target == "local" and gpu.options == {"max_temp_c": 80}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"name": "a", "kind": "mysql", "node": "n", "url": "x"}], "unknown kind 'mysql'"),
        ([{"name": "a", "kind": "vault", "url": "x"}], "lacks node"),
        ([{"name": "a", "kind": "vault", "node": "n"}], "needs a target"),
        ([{"name": "a", "kind": "vault", "node": "n", "url": "x"}] * 2, "duplicate services: n.a"),
    ],
)
def test_bad_inventory_is_a_one_line_config_error(items: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_inventory(items)


def test_judges() -> None:
    assert j.judge_postgres(100, 3, 10)[0] == j.UP
    assert j.judge_postgres(100, 3, 90)[0] == j.DEGRADED
    assert j.judge_postgres(100, 3, 97)[0] == j.DOWN
    assert j.judge_redis("PONG", {"used_memory": "950", "maxmemory": "1000"})[0] == j.DEGRADED
    assert j.judge_redis("PONG", {"used_memory": "950", "maxmemory": "0"})[0] == j.UP
    assert j.judge_disk(100, 50) == (j.UP, j.judge_disk(100, 50)[1])
    assert j.judge_disk(100, 10)[0] == j.DEGRADED and j.judge_disk(100, 1)[0] == j.DOWN
    assert j.judge_gpus("")[0] == j.UNKNOWN
    assert j.judge_gpus("0, RTX, 5, 100, 1000, 50\n1, RTX, 5, 995, 1000, 50")[0] == j.DEGRADED
    assert j.parse_redis_info("# Memory\r\nused_memory:12\r\nmaxmemory:0\r\n") == {
        "used_memory": "12",
        "maxmemory": "0",
    }


def test_down_and_recovered_are_emitted_once_per_change() -> None:
    state: dict[str, ServiceState] = {}
    seen = []
    for status in ["up", "down", "down", "unknown", "down", "degraded", "up", "down"]:
        state, events = advance(state, [row(status)], "t")
        seen.append([e.event for e in events])
    assert seen == [[], [SERVICE_DOWN], [], [], [], [SERVICE_RECOVERED], [], [SERVICE_DOWN]]


def test_down_after_hysteresis_ignores_a_single_blip() -> None:
    state: dict[str, ServiceState] = {}
    seen = []
    for status in ["down", "up", "down", "down", "down", "up"]:
        state, events = advance(state, [row(status)], "t", down_after=2)
        seen.append([e.event for e in events])
    assert seen == [[], [], [], [SERVICE_DOWN], [], [SERVICE_RECOVERED]]
    assert state["oracle.vault"] == ServiceState("up", 0, False, "t")


def test_first_sweep_reports_services_already_down_and_skips_unknown() -> None:
    state, events = advance({}, [row("down", "a"), row("up", "b"), row("unknown", "c")], "t")
    assert [(e.event, e.row.service, e.previous) for e in events] == [(SERVICE_DOWN, "a", None)]
    assert set(state) == {"oracle.a", "oracle.b"}


def test_metrics_text_and_atomic_write(tmp_path: Path) -> None:
    rows = [row("down"), HealthRow('we"ird', "thanos", "gpu", "unknown", 0.0, "")]
    text = format_metrics(rows, 0.25, 1700000000.0)
    assert 'swarm_service_up{service="vault",node="oracle",kind="vault"} 0' in text
    assert 'swarm_service_status{service="we\\"ird",node="thanos",kind="gpu",status="unknown"} 1' in text
    assert 'swarm_service_up{service="we' not in text  # unknown is not "down"
    assert "swarm_health_sweep_seconds 0.2500" in text and text.endswith("\n")
    target = write_textfile(text, tmp_path / "tf" / "swarm.prom")
    assert target.read_text() == text
    assert [p.name for p in target.parent.iterdir()] == ["swarm.prom"]


def test_node_inventories_shipped_for_gpu_nodes() -> None:
    root = Path(__file__).resolve().parents[2] / "deployments" / "health"
    for node in ("starlord", "thanos"):
        services = load_inventory(root / f"{node}.yaml")
        assert {(s.kind, s.node) for s in services} == {("gpu", node), ("disk", node)}
