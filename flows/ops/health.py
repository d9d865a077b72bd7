"""Health sweep of the whole cluster (pool ``oracle``, every 5 minutes).

Probes every service of the inventory concurrently, each with its own timeout, plus this node's GPUs and
disks (GPU and disk probes of other nodes are reported ``skipped``: deploy this flow on their pools with
``local_node`` set to cover them). Writes a table artifact ``health-report``, Prometheus metrics (textfile or
Pushgateway), and the per-service state in the ledger (table ``health_state``); emits
``swarm.service.down`` / ``swarm.service.recovered`` on state changes only (state mirrored to a local JSON
file, which stands in while the ledger itself is unreachable).

A service being down never fails the run: the run *records* it. The run fails only on bad parameters or its
own bugs. Safe to re-run at any time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from blocks.postgres import PostgresLedger
from flows.common.blocks import resolve_ledger_url
from flows.common.db import Database, utc_now
from flows.common.errors import ConfigError, ServiceUnavailable
from flows.common.events import service_resource_id
from flows.common.nodes import Node
from flows.ops import health_state, metrics
from flows.ops.inventory import Service, load_inventory
from flows.ops.judges import DEGRADED, DOWN, UP
from flows.ops.probes import DEFAULT_TIMEOUT_S, HealthRow, skipped, sweep, to_rows

T = TypeVar("T")


def this_node() -> str:
    return os.environ.get("SWARM_NODE", "oracle")


async def sweep_inventory(
    services: list[Service], local_node: str, timeout_s: float, verify_tls: bool = True
) -> list[HealthRow]:
    """Probe what this node can see; GPU/disk entries of other nodes come back as ``skipped``."""
    local = [s for s in services if not s.is_local or s.node == local_node]
    others = [skipped(s, f"probed on {s.node}") for s in services if s.is_local and s.node != local_node]
    return to_rows([*await sweep(local, timeout_s, verify_tls), *others])


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller's thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def summarize(rows: list[HealthRow], seconds: float) -> dict[str, Any]:
    counts = {s: sum(r.status == s for r in rows) for s in {r.status for r in rows}}
    return {
        "counts": counts,
        "down": sorted(r.key for r in rows if r.status == DOWN),
        "degraded": sorted(r.key for r in rows if r.status == DEGRADED),
        "seconds": round(seconds, 3),
    }


@task(task_run_name="publish-metrics", cache_policy=NO_CACHE)
def publish_metrics(rows: list[HealthRow], seconds: float, textfile: str | None, pushgateway: str | None) -> str:
    text = metrics.format_metrics(rows, seconds, time.time())
    if pushgateway:
        metrics.push_metrics(text, pushgateway)
        return f"pushed to {pushgateway}"
    target = metrics.write_textfile(text, textfile or metrics.DEFAULT_TEXTFILE)
    return f"written to {target}"


# A health check must never be answered from a cache.
@task(task_run_name="record-transitions", cache_policy=NO_CACHE)
def record_transitions(rows: list[HealthRow], ledger_url: str, down_after: int, mirror: Path) -> list[str]:
    """Update the stored state and emit one event per state change.

    The ledger may live on a service this sweep just found down: then the local mirror file stands in,
    so alerts keep flowing (the ledger catches up on the next sweep that reaches it).
    """
    logger = get_run_logger()
    db: Database | None = Database(ledger_url)
    try:
        previous = health_state.load_state(db)
    except ServiceUnavailable as exc:
        logger.warning("ledger unavailable, using %s: %s", mirror, exc)
        db, previous = None, health_state.load_state_file(mirror)
    state, transitions = health_state.advance(previous, rows, utc_now(), down_after)
    for t in transitions:
        emit_event(
            event=t.event,
            resource={
                "prefect.resource.id": service_resource_id(t.row.node, t.row.service),
                "prefect.resource.name": t.row.key,
                "swarm.kind": t.row.kind,
                "swarm.node": t.row.node,
            },
            payload={"status": t.row.status, "previous": t.previous, "detail": t.row.detail},
        )
    try:
        health_state.save_state_file(mirror, state)
    except OSError as exc:  # the mirror is a fallback; the ledger below is the record
        logger.warning("state mirror %s not written: %s", mirror, exc)
    if db is not None:
        health_state.save_state(db, state)
    return [f"{t.event} {t.row.key}" for t in transitions]


@flow(name="health", log_prints=False)
def health(
    inventory: str | list[dict[str, Any]] | None = None,
    local_node: Node | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ledger_url: str | None = None,
    ledger_block: PostgresLedger | str | None = None,
    textfile: str | None = None,
    pushgateway: str | None = None,
    down_after: int = 1,
    verify_tls: bool = True,
    state_file: str = ".data/health_state.json",
) -> dict[str, Any]:
    """Probe every service, publish the table, metrics and state-change events; return a summary.

    Args:
        inventory: The services to probe: a YAML/JSON file (a list of {name, kind, node, url|dsn|path}), or
            that list itself. Empty: the cluster's built-in list.
        local_node: The node this run is on: its GPUs and disks are probed, other nodes' are reported
            skipped. Empty: SWARM_NODE, else oracle.
        timeout_s: Seconds each probe may take (an inventory entry's own timeout_s wins).
        ledger_url: Database that keeps each service's state between sweeps (no password in it). Empty:
            the node's ledger.
        ledger_block: Saved PostgresLedger block for that database (UI: pick one; CLI, prefect.yaml: its
            name); wins over ledger_url.
        textfile: File the Prometheus metrics are written to, for node-exporter's textfile collector.
            Empty: /var/lib/prometheus/node-exporter/swarm_health.prom.
        pushgateway: Pushgateway URL to push the metrics to instead of writing the textfile.
        down_after: Failed sweeps in a row before a service counts as down and swarm.service.down is sent.
        verify_tls: Check the TLS certificates of https services.
        state_file: Local JSON copy of the service states, used while the ledger is unreachable.
    """
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    if down_after < 1:
        raise ConfigError(f"down_after must be at least 1, got {down_after}")
    logger = get_run_logger()
    ledger = resolve_ledger_url(ledger_block, ledger_url)
    Database(ledger)  # a malformed URL is a bad parameter: fail before probing anything
    services = load_inventory(Path(inventory) if isinstance(inventory, str) else inventory)
    start = time.perf_counter()
    rows = run_async(sweep_inventory(services, local_node or this_node(), timeout_s, verify_tls))
    seconds = time.perf_counter() - start
    create_table_artifact(
        key="health-report",
        table=[asdict(r) for r in sorted(rows, key=lambda r: (r.node, r.service))],
        description=f"Health sweep: {sum(r.status == UP for r in rows)}/{len(rows)} up in {seconds:.2f} s",
    )
    summary = summarize(rows, seconds)
    try:
        summary["metrics"] = publish_metrics(rows, seconds, textfile, pushgateway)
    except Exception as exc:  # metrics are a side channel: a full disk there must not hide the sweep
        logger.warning("metrics not published: %s", exc)
        summary["metrics"] = f"failed: {exc}"
    summary["events"] = record_transitions(rows, ledger, down_after, Path(state_file))
    for r in rows:
        if r.status in (DOWN, DEGRADED):
            logger.warning("%s is %s: %s", r.key, r.status, r.detail)
    logger.info("health: %s in %.2f s", summary["counts"], seconds)
    return summary
