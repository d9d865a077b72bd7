"""The probes against real PostgreSQL and Redis, and local HTTP servers that answer like each service."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import pytest

from flows.ops.inventory import Service
from flows.ops.probes import HealthRow, sweep, to_rows
from testkit.ops_services import HEALTHY, fake_cluster, fake_service

PG = os.environ.get("SWARM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def run(services: list[Service], timeout: float = 2.0) -> dict[str, HealthRow]:
    return {r.service: r for r in to_rows(asyncio.run(sweep(services, timeout)))}


def http_services(urls: dict[str, str]) -> list[Service]:
    return [Service(kind, kind, "oracle", url) for kind, url in urls.items()]


def test_healthy_cluster_is_all_up() -> None:
    with fake_cluster() as urls:
        services = [
            *http_services(urls),
            Service("postgres", "postgres", "oracle", PG),
            Service("redis", "redis", "oracle", "redis://127.0.0.1:6379/0"),
        ]
        rows = run(services)
    assert {name: r.status for name, r in rows.items() if r.status != "up"} == {}
    assert len(rows) == len(HEALTHY) + 2
    assert "qwen3-8b" in rows["vllm"].detail
    assert "connections" in rows["postgres"].detail
    assert "used" in rows["redis"].detail
    assert rows["consul"].detail == "leader 10.0.0.1:8300"


@pytest.mark.parametrize(
    ("code", "status", "detail"),
    [
        (200, "up", "active"),
        (429, "up", "standby"),
        (472, "degraded", "DR secondary"),
        (473, "up", "performance standby"),
        (501, "down", "not initialised"),
        (503, "down", "sealed"),
        (500, "down", "unexpected HTTP 500"),
    ],
)
def test_vault_status_codes_are_read_as_vault_means_them(code: int, status: str, detail: str) -> None:
    with fake_service({"/v1/sys/health": (code, {"sealed": code == 503})}) as srv:
        row = run([Service("vault", "vault", "oracle", srv.url)])["vault"]
    assert (row.status, detail in row.detail) == (status, True)


UNHEALTHY = [
    ("vllm", {"/health": (503, "")}, "down", "/health HTTP 503"),
    ("vllm", {"/v1/models": (200, {"data": []})}, "degraded", "no model loaded"),
    ("litellm", {"/health/readiness": (503, {"status": "unhealthy"})}, "degraded", "readiness HTTP 503"),
    ("litellm", {"/health/liveliness": (500, "")}, "down", "liveliness HTTP 500"),
    ("consul", {"/v1/status/leader": (200, '""')}, "down", "no leader"),
    ("grafana", {"/api/health": (503, {"database": "failing"})}, "down", "HTTP 503"),
    ("grafana", {"/api/health": (200, {"database": "failing"})}, "degraded", "database failing"),
    ("qdrant", {"/collections/docs": (200, {"result": {"status": "red"}})}, "degraded", "docs=red"),
    ("qdrant", {"/readyz": (503, "some shards are not ready")}, "down", "/readyz HTTP 503"),
    ("prometheus", {"/-/ready": (503, "Service Unavailable")}, "down", "HTTP 503"),
    ("openwebui", {"/health": (500, "")}, "down", "HTTP 500"),
    ("prefect", {"/api/health": (200, False)}, "degraded", "False"),
    ("searxng", {"/healthz": (404, "")}, "down", "HTTP 404"),
]


@pytest.mark.parametrize(("kind", "routes", "status", "detail"), UNHEALTHY)
def test_unhealthy_answers_are_reported(kind: str, routes: dict, status: str, detail: str) -> None:
    with fake_service({**HEALTHY[kind], **routes}) as srv:
        row = run([Service(kind, kind, "oracle", srv.url)])[kind]
    assert row.status == status
    assert detail in row.detail


def test_a_hung_service_costs_only_its_timeout() -> None:
    with fake_cluster(delays={"grafana": 5.0}) as urls:
        start = time.perf_counter()
        rows = run(http_services(urls), timeout=0.5)
        elapsed = time.perf_counter() - start
    assert elapsed < 1.5
    assert rows["grafana"].status == "down"
    assert "no answer within 0.5 s" in rows["grafana"].detail
    assert all(r.status == "up" for name, r in rows.items() if name != "grafana")


def test_unreachable_services_are_down_not_crashes() -> None:
    services = [
        Service("vault", "vault", "oracle", "http://127.0.0.1:1"),
        Service("postgres", "postgres", "oracle", "postgresql://postgres@127.0.0.1:1/postgres"),
        Service("redis", "redis", "oracle", "redis://127.0.0.1:1"),
    ]
    rows = run(services)
    assert {r.status for r in rows.values()} == {"down"}
    assert all(r.detail for r in rows.values())


def _fake_nvidia_smi(tmp_path: Path, output: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'OUT'\n{output}\nOUT\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_gpu_probe_reads_nvidia_smi_and_is_unknown_without_it(tmp_path: Path) -> None:
    ok = _fake_nvidia_smi(tmp_path, "0, NVIDIA GeForce RTX 4090, 37, 12000, 24564, 61")
    (tmp_path / "hot").mkdir()
    hot = _fake_nvidia_smi(tmp_path / "hot", "0, NVIDIA GeForce RTX 3080, 99, 9000, 10240, 91")
    rows = run(
        [
            Service("gpu", "gpu", "starlord", "local", options={"nvidia_smi": ok}),
            Service("gpu-hot", "gpu", "thanos", "local", options={"nvidia_smi": hot}),
            Service("gpu-none", "gpu", "oracle", "local", options={"nvidia_smi": "no-such-nvidia-smi"}),
        ]
    )
    assert rows["gpu"].status == "up" and "RTX 4090" in rows["gpu"].detail
    assert rows["gpu-hot"].status == "degraded" and "91C" in rows["gpu-hot"].detail
    assert rows["gpu-none"].status == "unknown"


def test_disk_probe_uses_thresholds(tmp_path: Path) -> None:
    rows = run(
        [
            Service("disk", "disk", "oracle", str(tmp_path)),
            Service("disk-strict", "disk", "oracle", str(tmp_path), options={"crit_free": 1.01}),
            Service("disk-missing", "disk", "oracle", str(tmp_path / "nope")),
        ]
    )
    assert rows["disk"].status in ("up", "degraded")  # depends on this machine, but it answers
    assert rows["disk-strict"].status == "down"
    assert rows["disk-missing"].status == "down"


def test_haproxy_monitor_uri_is_configurable() -> None:
    with fake_service({"/monitor": (200, "OK")}) as srv:
        rows = run([
            Service("ha", "haproxy", "oracle", srv.url, options={"monitor_uri": "/monitor"}),
            Service("ha-default", "haproxy", "oracle", srv.url),  # /healthz is not served here
        ])  # fmt: skip
    assert (rows["ha"].status, rows["ha-default"].status) == ("up", "down")


def test_qdrant_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_TEST_QDRANT_KEY", "s3cret")
    with fake_service(HEALTHY["qdrant"]) as srv:
        run([Service("qdrant", "qdrant", "starlord", srv.url, options={"api_key_env": "SWARM_TEST_QDRANT_KEY"})])
        headers = srv.headers_seen
    assert headers and all(h.get("api-key") == "s3cret" for h in headers)
