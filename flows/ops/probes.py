"""Probes: one coroutine per service kind, all run concurrently, each bounded by its own timeout.

A probe only gathers what the service says and hands it to a pure judge (``flows.ops.judges``); the sweep
wraps each probe in ``asyncio.wait_for`` so a hung service costs its timeout and nothing more, and
``to_rows`` turns the raw outcomes into report rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import psycopg

from flows.ops import judges as j
from flows.ops.inventory import Service

DEFAULT_TIMEOUT_S = 3.0
Probe = Callable[[httpx.AsyncClient, Service], Awaitable[j.Verdict]]


@dataclass(frozen=True)
class RawResult:
    service: Service
    verdict: j.Verdict | None  # None when the probe raised or timed out
    error: str | None
    elapsed_s: float


@dataclass(frozen=True)
class HealthRow:
    service: str
    node: str
    kind: str
    status: str
    latency_ms: float
    detail: str

    @property
    def key(self) -> str:
        return f"{self.node}.{self.service}"


def _url(svc: Service, path: str) -> str:
    return svc.target.rstrip("/") + path


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


async def _get(client: httpx.AsyncClient, svc: Service, path: str) -> httpx.Response:
    headers = {}
    api_key, bearer = _secret(svc, "api_key"), _secret(svc, "bearer")
    if api_key:
        headers["api-key"] = api_key  # Qdrant's header
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    return await client.get(_url(svc, path), headers=headers)


def _secret(svc: Service, name: str) -> str | None:
    """``<name>_env`` names an environment variable, so inventories never hold the secret itself."""
    env_name = svc.options.get(f"{name}_env")
    value = os.environ.get(str(env_name)) if env_name else None
    return str(value) if value else None


def _ready_probe(path: str) -> Probe:
    async def probe(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
        return j.judge_ready((await _get(client, svc, svc.options.get("monitor_uri", path))).status_code)

    return probe


async def probe_vault(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    return j.judge_vault((await _get(client, svc, "/v1/sys/health")).status_code)


async def probe_consul(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    resp = await _get(client, svc, "/v1/status/leader")
    return j.judge_consul(resp.status_code, _json(resp))


async def probe_vllm(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    health = await _get(client, svc, "/health")
    if health.status_code != 200:
        return j.judge_vllm(health.status_code, None, None)
    models = await _get(client, svc, "/v1/models")
    return j.judge_vllm(200, models.status_code, _json(models))


async def probe_litellm(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    live, ready = await asyncio.gather(_get(client, svc, "/health/liveliness"), _get(client, svc, "/health/readiness"))
    return j.judge_litellm(live.status_code, ready.status_code, _json(ready))


async def probe_grafana(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    resp = await _get(client, svc, "/api/health")
    return j.judge_grafana(resp.status_code, _json(resp))


async def probe_openwebui(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    resp = await _get(client, svc, "/health")
    return j.judge_openwebui(resp.status_code, _json(resp))


async def probe_prefect(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    resp = await _get(client, svc, "/api/health")
    return j.judge_prefect(resp.status_code, _json(resp))


async def probe_qdrant(client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    ready = await _get(client, svc, "/readyz")
    if ready.status_code != 200:
        return j.judge_qdrant(ready.status_code, None)
    listing = _json(await _get(client, svc, "/collections")) or {}
    names = [c.get("name") for c in (listing.get("result") or {}).get("collections", [])]
    infos = await asyncio.gather(*(_get(client, svc, f"/collections/{n}") for n in names))
    statuses = {
        n: ((_json(r) or {}).get("result") or {}).get("status", f"HTTP {r.status_code}")
        for n, r in zip(names, infos, strict=True)
    }
    return j.judge_qdrant(200, statuses)


async def probe_postgres(_client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    async with await psycopg.AsyncConnection.connect(svc.target, connect_timeout=5, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT 1, current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        _one, max_conn, reserved, used = await cur.fetchone()  # type: ignore[misc]
    return j.judge_postgres(max_conn, reserved, used, float(svc.options.get("min_free_ratio", 0.1)))


async def _resp_command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *args: str) -> str:
    """Send one command in RESP and read a simple, error or bulk-string reply."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    writer.write(payload.encode())
    await writer.drain()
    line = (await reader.readline()).decode().rstrip("\r\n")
    if line.startswith("$"):
        size = int(line[1:])
        return "" if size < 0 else (await reader.readexactly(size + 2))[:-2].decode()
    if line.startswith("-"):
        raise RuntimeError(f"Redis said {line[1:]}")
    return line[1:]


async def probe_redis(_client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    parts = urlsplit(svc.target)
    reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379)
    try:
        if parts.password:
            user = [unquote(parts.username)] if parts.username else []
            await _resp_command(reader, writer, "AUTH", *user, unquote(parts.password))
        pong = await _resp_command(reader, writer, "PING")
        info = j.parse_redis_info(await _resp_command(reader, writer, "INFO", "memory"))
    finally:
        writer.close()
    return j.judge_redis(pong, info, float(svc.options.get("max_memory_ratio", 0.9)))


async def probe_gpu(_client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    binary = str(svc.options.get("nvidia_smi", "nvidia-smi"))
    if shutil.which(binary) is None:
        return j.UNKNOWN, f"{binary} not found: no NVIDIA driver on this node"
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--query-gpu={','.join(j.GPU_FIELDS)}",
        "--format=csv,noheader,nounits",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        raise
    if proc.returncode != 0:
        return j.DOWN, f"nvidia-smi failed: {err.decode().strip()[:200]}"
    return j.judge_gpus(out.decode(), float(svc.options.get("max_temp_c", 85)))


async def probe_disk(_client: httpx.AsyncClient, svc: Service) -> j.Verdict:
    usage = await asyncio.to_thread(shutil.disk_usage, svc.target)
    return j.judge_disk(
        usage.total,
        usage.free,
        float(svc.options.get("warn_free", 0.15)),
        float(svc.options.get("crit_free", 0.05)),
    )


PROBES: dict[str, Probe] = {
    "postgres": probe_postgres,
    "redis": probe_redis,
    "qdrant": probe_qdrant,
    "vllm": probe_vllm,
    "litellm": probe_litellm,
    "openwebui": probe_openwebui,
    "prometheus": _ready_probe("/-/ready"),
    "alertmanager": _ready_probe("/-/ready"),
    "grafana": probe_grafana,
    "searxng": _ready_probe("/healthz"),
    "haproxy": _ready_probe("/healthz"),
    "vault": probe_vault,
    "consul": probe_consul,
    "prefect": probe_prefect,
    "gpu": probe_gpu,
    "disk": probe_disk,
}


async def run_probe(client: httpx.AsyncClient, svc: Service, default_timeout: float) -> RawResult:
    timeout = svc.timeout_s or default_timeout
    start = time.perf_counter()
    try:
        verdict = await asyncio.wait_for(PROBES[svc.kind](client, svc), timeout)
        return RawResult(svc, verdict, None, time.perf_counter() - start)
    except TimeoutError:
        return RawResult(svc, None, f"no answer within {timeout:g} s", time.perf_counter() - start)
    except Exception as exc:  # a probe failing is a finding about the service, not a bug of the sweep
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        error = f"{type(exc).__name__}: {reason}"[:300]
        return RawResult(svc, None, error, time.perf_counter() - start)


async def sweep(
    services: Sequence[Service], default_timeout: float = DEFAULT_TIMEOUT_S, verify_tls: bool = True
) -> list[RawResult]:
    """Probe every service at once; the sweep lasts about as long as its slowest probe's timeout."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=None, limits=limits, verify=verify_tls, trust_env=False) as client:
        return list(await asyncio.gather(*(run_probe(client, s, default_timeout) for s in services)))


def skipped(svc: Service, reason: str) -> RawResult:
    return RawResult(svc, (j.SKIPPED, reason), None, 0.0)


def to_rows(results: Sequence[RawResult]) -> list[HealthRow]:
    """Raw outcomes as report rows: a probe that raised or timed out means the service is down."""
    rows = []
    for r in results:
        status, detail = r.verdict if r.verdict is not None else (j.DOWN, r.error or "failed")
        latency_ms = round(r.elapsed_s * 1000, 1)
        rows.append(HealthRow(r.service.name, r.service.node, r.service.kind, status, latency_ms, detail))
    return rows
