"""Pure verdicts: what a probe saw (status codes, bodies, numbers) turned into up / degraded / down.

No I/O here, so every rule about what "healthy" means for a service is tested in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UP, DEGRADED, DOWN, UNKNOWN, SKIPPED = "up", "degraded", "down", "unknown", "skipped"
Verdict = tuple[str, str]

# Vault answers /v1/sys/health with a status code per state (its defaults, no query overrides).
VAULT_CODES: dict[int, Verdict] = {
    200: (UP, "active, unsealed"),
    429: (UP, "standby, unsealed"),
    472: (DEGRADED, "DR secondary (not serving clients)"),
    473: (UP, "performance standby"),
    501: (DOWN, "not initialised"),
    503: (DOWN, "sealed"),
}


def judge_ready(code: int, what: str = "ready") -> Verdict:
    """Endpoints whose only contract is 200 when ready (Prometheus, Alertmanager, SearXNG, HAProxy...)."""
    return (UP, what) if code == 200 else (DOWN, f"HTTP {code}")


def judge_vault(code: int) -> Verdict:
    return VAULT_CODES.get(code, (DOWN, f"unexpected HTTP {code}"))


def judge_consul(code: int, leader: Any) -> Verdict:
    if code != 200:
        return DOWN, f"HTTP {code}"
    if not isinstance(leader, str) or not leader.strip():
        return DOWN, "no leader elected"
    return UP, f"leader {leader}"


def judge_vllm(health_code: int, models_code: int | None, models: Any) -> Verdict:
    if health_code != 200:
        return DOWN, f"/health HTTP {health_code}"
    if models_code != 200:
        return DEGRADED, f"/v1/models HTTP {models_code}"
    ids = [m.get("id", "?") for m in (models or {}).get("data", []) if isinstance(m, Mapping)]
    if not ids:
        return DEGRADED, "no model loaded"
    return UP, "models: " + ", ".join(ids)


def judge_litellm(live_code: int, ready_code: int | None, ready: Any) -> Verdict:
    if live_code != 200:
        return DOWN, f"liveliness HTTP {live_code}"
    if ready_code != 200:
        return DEGRADED, f"alive, readiness HTTP {ready_code}"
    db = ready.get("db") if isinstance(ready, Mapping) else None
    if db not in (None, "connected", "Not connected"):
        return DEGRADED, f"ready, db {db}"
    return UP, f"ready (db {db or 'n/a'})"


def judge_grafana(code: int, body: Any) -> Verdict:
    if code != 200:
        return DOWN, f"HTTP {code}"
    database = body.get("database") if isinstance(body, Mapping) else None
    if database != "ok":
        return DEGRADED, f"database {database}"
    return UP, f"version {body.get('version', '?')}"


def judge_openwebui(code: int, body: Any) -> Verdict:
    if code != 200:
        return DOWN, f"HTTP {code}"
    if isinstance(body, Mapping) and body.get("status") is False:
        return DEGRADED, "status false"
    return UP, "ok"


def judge_prefect(code: int, body: Any) -> Verdict:
    if code != 200:
        return DOWN, f"HTTP {code}"
    return (UP, "ok") if body is True else (DEGRADED, f"health says {body!r}")


def judge_qdrant(ready_code: int, collections: Mapping[str, str] | None) -> Verdict:
    """``collections`` maps each collection to its status (green / yellow / grey / red)."""
    if ready_code != 200:
        return DOWN, f"/readyz HTTP {ready_code}"
    if collections is None:
        return DEGRADED, "ready, collections unreadable"
    bad = sorted(f"{n}={s}" for n, s in collections.items() if s not in ("green", "yellow", "grey"))
    if bad:
        return DEGRADED, "collections not green: " + ", ".join(bad)
    return UP, f"{len(collections)} collections"


def judge_postgres(max_connections: int, reserved: int, used: int, min_free_ratio: float = 0.1) -> Verdict:
    usable = max(max_connections - reserved, 1)
    free = usable - used
    detail = f"{used}/{usable} connections"
    if free <= 0:
        return DOWN, detail + ", none free"
    if free / usable < min_free_ratio:
        return DEGRADED, detail + ", headroom low"
    return UP, detail


def judge_redis(pong: str, info: Mapping[str, str], max_ratio: float = 0.9) -> Verdict:
    if pong != "PONG":
        return DOWN, f"PING answered {pong!r}"
    used = int(info.get("used_memory", 0))
    limit = int(info.get("maxmemory", 0))
    human = info.get("used_memory_human", f"{used}B")
    if limit <= 0:
        return UP, f"{human} used, no maxmemory"
    ratio = used / limit
    detail = f"{human} used, {ratio:.0%} of maxmemory"
    return (DEGRADED, detail) if ratio >= max_ratio else (UP, detail)


def parse_redis_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


GPU_FIELDS = ("index", "name", "utilization.gpu", "memory.used", "memory.total", "temperature.gpu")


def judge_gpus(csv_text: str, max_temp_c: float = 85.0, max_mem_ratio: float = 0.98) -> Verdict:
    """``nvidia-smi --query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits`` output."""
    rows = [[c.strip() for c in line.split(",")] for line in csv_text.strip().splitlines() if line.strip()]
    if not rows:
        return UNKNOWN, "no GPU listed"
    status, parts = UP, []
    for row in rows:
        if len(row) < len(GPU_FIELDS):
            return UNKNOWN, f"unreadable nvidia-smi line {','.join(row)!r}"
        idx, name, util, used, total, temp = row[: len(GPU_FIELDS)]
        try:
            temp_c, used_mb, total_mb = float(temp), float(used), float(total)
        except ValueError:
            return UNKNOWN, f"unreadable nvidia-smi values for GPU {idx}"
        parts.append(f"gpu{idx} {name} {util}% {used_mb:.0f}/{total_mb:.0f} MiB {temp_c:.0f}C")
        if temp_c >= max_temp_c or (total_mb and used_mb / total_mb >= max_mem_ratio):
            status = DEGRADED
    return status, "; ".join(parts)


def judge_disk(total: int, free: int, warn_free: float = 0.15, crit_free: float = 0.05) -> Verdict:
    ratio = free / total if total else 0.0
    detail = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB ({ratio:.0%})"
    if ratio < crit_free:
        return DOWN, detail
    if ratio < warn_free:
        return DEGRADED, detail
    return UP, detail
