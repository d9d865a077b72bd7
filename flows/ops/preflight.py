"""Node preflight: does this node have what its deployments need? (flow ``preflight``, one deployment per pool;
``swarm doctor``; the end of ``python -m deployments.bootstrap``).

What is checked comes from ``prefect.yaml`` (``flows.ops.preflight_needs``): the Prefect API and this node's work
pool, the blocks the deployments and the node's environment name, the ledger and Qdrant answering, the GPU slot's
concurrency limit, the embedding model against the cluster's, the GPU, folders, free disk, gpt-researcher's
Python, the ports the node binds, and on the node serving the API an alert target. Checks that need the API are
not run when it does not answer. One line per check, a table artifact ``preflight-report``, and the run fails
(one line) when any check failed.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml
from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, get_current_settings

from blocks import (
    GoogleDriveCredentials,
    NodeSettings,
    OpenAICompatibleEndpoint,
    PostgresLedger,
    QdrantConnection,
    RedisServer,
    SearxngServer,
)
from flows.common.blocks import data_dir, load_block, resolve_ledger_url
from flows.common.errors import ConfigError, SwarmError
from flows.common.nodes import Node
from flows.common.redact import redact
from flows.ops import preflight_checks as checks
from flows.ops.preflight_checks import FAIL, OK, WARN, Check, CheckResult, Verdict
from flows.ops.preflight_needs import EMBEDDING, EMBEDS, GPTR, GPU, QDRANT, NodeNeeds, node_needs, worker_healthcheck
from flows.rag.config import load_config
from flows.rag.resources import resolve_connections

REPO = Path(__file__).resolve().parents[2]
WORKER_UNIT = REPO / "deployments" / "systemd" / "prefect-worker@.service"
# The block type each ``*_block`` parameter of the flows names (a test checks every flow's are here).
BLOCK_TYPES: dict[str, type[Block]] = {
    "ledger_block": PostgresLedger,
    "postgres_block": PostgresLedger,
    "qdrant_block": QdrantConnection,
    "redis_block": RedisServer,
    "endpoint_block": OpenAICompatibleEndpoint,
    "fallback_block": OpenAICompatibleEndpoint,
    "llm_block": OpenAICompatibleEndpoint,
    "searxng_block": SearxngServer,
    "credentials_block": GoogleDriveCredentials,
}
ENV_BLOCK_TYPES: dict[str, type[Block]] = {"SWARM_LEDGER_BLOCK": PostgresLedger, "SWARM_QDRANT_BLOCK": QdrantConnection}
NOT_CHECKED = "not checked: the Prefect API did not answer"


class PreflightFailed(SwarmError):
    """Some check failed; the message names them."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # each network check
    load_timeout_s: float = 180.0  # loading the embedding model, importing gpt-researcher
    min_free_gib: float = 10.0
    min_gpu_free_mib: float = 1024.0


def load_spec() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def local_node(explicit: str | None, spec: dict) -> str | None:
    """This node's pool: given, else SWARM_NODE, else the host name when it is a pool's; None when unknown."""
    pools = {(d.get("work_pool") or {}).get("name") for d in spec.get("deployments") or []} - {None}
    node = explicit or os.environ.get("SWARM_NODE") or socket.gethostname().split(".")[0]
    if explicit and explicit not in pools:
        raise ConfigError(f"node {explicit!r} has no deployments in prefect.yaml (pools: {', '.join(sorted(pools))})")
    return node if node in pools else None


def require_node(explicit: str | None) -> str:
    if (node := local_node(explicit, load_spec())) is None:
        raise ConfigError("which node is this? give its pool (oracle, starlord, thanos) or set SWARM_NODE")
    return node


# --- checks that need the Prefect API -------------------------------------------------------------------


def prefect_api(node: str) -> Verdict:
    """The API answers its health route, accepts this node's credentials and has the node's work pool."""
    url = PREFECT_API_URL.value()
    if not url:
        return FAIL, "PREFECT_API_URL is not set: point it at the cluster's server, e.g. http://oracle:4200/api"
    shown = redact(url)
    answer = httpx.get(url.rstrip("/") + "/health", timeout=5)
    if answer.status_code != 200:
        return FAIL, f"{shown}/health answered HTTP {answer.status_code}"
    try:
        with get_client(sync_client=True) as client:
            client.read_work_pool(node)
    except ObjectNotFound:
        return FAIL, f"{shown} has no work pool {node!r}: run python -m deployments.bootstrap"
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (401, 403):
            return (
                FAIL,
                f"{shown} refused this node's credentials (PREFECT_API_AUTH_STRING): HTTP {exc.response.status_code}",
            )
        raise
    return OK, f"{shown} answers; work pool {node!r} exists"


def saved_block(block_cls: type[Block] | None, name: str, where: str) -> Verdict:
    if block_cls is None:
        return FAIL, f"{where}: no block type is known for this parameter (flows.ops.preflight.BLOCK_TYPES)"
    load_block(block_cls, name, where)
    return OK, f"{block_cls.__name__} {name!r} saved ({where})"


def _node_settings(node: str) -> NodeSettings:
    block = load_block(NodeSettings, f"node-{node}", "node settings")
    assert block is not None  # a name is given: a block or a ConfigError
    return block


def node_block(node: str) -> Verdict:
    block = _node_settings(node)
    return OK, f"NodeSettings 'node-{node}' saved (gpu_slot {block.gpu_slot or 'none'})"


def gpu_slot(node: str) -> Verdict:
    """The concurrency limit the node's GPU runs hold exists, is active and has a slot."""
    block = _node_settings(node)
    if not block.gpu_slot:
        return FAIL, f"node-{node} names no gpu_slot: its GPU runs would not queue for the GPU"
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(block.gpu_slot)
        except ObjectNotFound:
            return FAIL, f"no concurrency limit {block.gpu_slot!r}: run python -m deployments.bootstrap"
    if not limit.active or limit.limit < 1:
        return FAIL, f"{block.gpu_slot} is {'inactive' if not limit.active else 'at 0 slots'}: GPU runs would wait"
    return OK, f"{block.gpu_slot}: {limit.limit} slot(s), active"


# --- checks that read the node's settings (the API too when a node block is named) ----------------------


def node_ledger() -> Verdict:
    return checks.ledger(resolve_ledger_url(None, None))


def rag_qdrant(timeout_s: float) -> Verdict:
    target = resolve_connections(load_config())
    return checks.qdrant(target.qdrant.url, target.qdrant.api_key, target.qdrant_path, timeout_s)


def rag_embedding(load: bool, gpu_node: bool) -> Verdict:
    """On a GPU node the model is loaded on the CPU: the preflight holds no gpu slot, so it must not take the card
    from the slot's holder; whether the model fits the card is the gpu check's (gpu_memory)."""
    config = load_config()
    target = resolve_connections(config)
    model, device, precision = config.embedding_model, config.device, config.embed_precision
    if gpu_node:
        device, precision = "cpu", "auto" if precision == "float16" else precision  # fp16: a GPU's, judged there
    return checks.embedding(model, device, precision, target.ledger_url, target.collection, load)


def gpu_memory(min_free_mib: float, embeds: bool) -> Verdict:
    """Free memory as nvidia-smi reports it (no CUDA context, no gpu slot needed); where the node's batches embed,
    judged against the embedding model's need, read from its files."""
    if not embeds:
        return checks.gpu(min_free_mib)
    from flows.rag.embed import gpu_need_of

    config = load_config()
    need = gpu_need_of(config.embedding_model, config.embed_precision)
    return checks.gpu(min_free_mib, (config.embedding_model, need, config.embed_batch_tokens))


def served_api() -> tuple[str, int] | None:
    """The API's address and port when this node serves the Prefect API (its URL names one of this machine's
    addresses): the server binds that address, not every one, so that is the one to check."""
    parts = urlsplit(PREFECT_API_URL.value() or "")
    if not parts.hostname or not checks.is_local_address(parts.hostname):
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def planned_checks(needs: NodeNeeds, limits: Limits, alert_target: bool = False) -> list[tuple[Check, bool]]:
    """Every check this node's deployments call for, each with whether it needs the Prefect API. The alert target
    is checked on the node serving the API, and wherever ``alert_target`` asks (the bootstrap)."""
    quick, slow = limits.timeout_s, limits.load_timeout_s
    env_blocks = {"SWARM_LEDGER_BLOCK": os.environ.get("SWARM_LEDGER_BLOCK")}
    if needs.needs & {QDRANT, EMBEDDING}:
        env_blocks["SWARM_QDRANT_BLOCK"] = os.environ.get("SWARM_QDRANT_BLOCK")
    via_blocks = any(env_blocks.values())  # the ledger and Qdrant are then read from blocks, through the API
    planned = [(check, True) for check in _block_checks(needs, env_blocks, quick)]
    planned.append((Check("ledger", node_ledger, quick), via_blocks))
    if QDRANT in needs.needs:
        planned.append((Check("qdrant", partial(rag_qdrant, quick), quick), via_blocks))
    if EMBEDDING in needs.needs:
        run = partial(rag_embedding, EMBEDS in needs.needs, GPU in needs.needs)
        planned.append((Check("embedding model", run, slow if EMBEDS in needs.needs else quick), via_blocks))
    if GPU in needs.needs:
        planned.append((Check("gpu slot", partial(gpu_slot, needs.node), quick), True))
        gpu = partial(gpu_memory, limits.min_gpu_free_mib, EMBEDS in needs.needs)
        planned.append((Check("gpu", gpu, quick), False))
    if GPTR in needs.needs:
        python = needs.gptr_python or os.environ.get("SWARM_GPTR_PYTHON")
        planned.append((Check("gpt-researcher python", partial(checks.gptr_python, python), slow), False))
    planned += [(check, False) for check in _folder_checks(needs, limits)]
    api = served_api()
    planned += [(check, False) for check in _port_checks(api)]
    if alert_target or api is not None:
        alerts = partial(checks.alertmanager, os.environ.get("SWARM_ALERTMANAGER_URL"))
        planned.append((Check("alert target", alerts, quick), False))
    return planned


def _block_checks(needs: NodeNeeds, env_blocks: dict[str, str | None], timeout_s: float) -> list[Check]:
    """The node's own block, then each block the environment or a deployment names, once."""
    named = [(ENV_BLOCK_TYPES[setting], name, setting) for setting, name in env_blocks.items() if name]
    named += [(BLOCK_TYPES.get(ref.parameter), ref.name, ref.where) for ref in needs.blocks]
    found = [Check(f"block node-{needs.node}", partial(node_block, needs.node), timeout_s)]
    seen: set[tuple[type[Block] | None, str]] = set()
    for block_cls, name, where in named:
        if (block_cls, name) not in seen:
            seen.add((block_cls, name))
            found.append(Check(f"block {name}", partial(saved_block, block_cls, name, where), timeout_s))
    return found


def _folder_checks(needs: NodeNeeds, limits: Limits) -> list[Check]:
    """Each folder the node's runs write (data dir, ``*_dir`` parameters) or read (a local source), and the
    free disk under those written."""
    folders = {str(data_dir()): True} | dict.fromkeys(needs.write_dirs, True) | dict.fromkeys(needs.read_dirs, False)
    found = [
        Check(f"folder {path}", partial(checks.folder, path, writable), limits.timeout_s)
        for path, writable in folders.items()
    ]
    for path in _distinct_filesystems([path for path, writable in folders.items() if writable]):
        found.append(Check(f"disk {path}", partial(checks.disk, path, limits.min_free_gib), limits.timeout_s))
    return found


def _distinct_filesystems(paths: list[str]) -> list[str]:
    """One path per filesystem (a missing folder counts on the filesystem that would hold it)."""
    seen: dict[int, str] = {}
    for path in paths:
        seen.setdefault(checks.nearest_existing(path).stat().st_dev, path)
    return list(seen.values())


def _port_checks(api: tuple[str, int] | None) -> list[Check]:
    """The worker's health-check port, and the server's on the node serving the API: free, or held by them."""
    found = []
    settings = get_current_settings().worker.webserver
    if (bound := worker_healthcheck(WORKER_UNIT.read_text())) is not None:
        host, number = bound[0] or settings.host, bound[1] or settings.port
        health = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{number}/health"
        run = partial(checks.port, host, number, "the Prefect worker's health check", health)
        found.append(Check(f"port {number}", run, 5))
    if api is not None:
        host, number = api
        health = f"{PREFECT_API_URL.value().rstrip('/')}/health"
        found.append(Check(f"port {number}", partial(checks.port, host, number, "the Prefect server", health), 5))
    return found


def preflight_report(node: str, limits: Limits = Limits(), alert_target: bool = False) -> list[CheckResult]:
    """This node's check lines: the API first, then everything else at once."""
    needs = node_needs(load_spec(), node)
    [api] = checks.run_checks([Check("prefect api", partial(prefect_api, node), limits.timeout_s)])
    planned = planned_checks(needs, limits, alert_target)
    runnable = [(i, check) for i, (check, uses_api) in enumerate(planned) if api.status == OK or not uses_api]
    done = dict(zip((i for i, _ in runnable), checks.run_checks([c for _, c in runnable]), strict=True))
    return [api, *(done.get(i) or CheckResult(check.name, WARN, NOT_CHECKED) for i, (check, _) in enumerate(planned))]


@flow(name="preflight", log_prints=False)
def preflight(
    node: Node | None = None,
    min_free_gib: float = 10.0,
    min_gpu_free_mib: float = 1024.0,
    timeout_s: float = 10.0,
    load_timeout_s: float = 180.0,
) -> list[dict[str, str]]:
    """Check that this node has what its deployments need; fails when any check fails.

    Args:
        node: The node (work pool) whose deployments are checked. Empty: SWARM_NODE, else the host name.
        min_free_gib: Free disk, in GiB, wanted under each folder the node's runs write.
        min_gpu_free_mib: Free memory, in MiB, wanted on some GPU of a node that runs GPU work.
        timeout_s: Seconds each network check may take.
        load_timeout_s: Seconds loading the embedding model or importing gpt-researcher may take.
    """
    if min(timeout_s, load_timeout_s) <= 0:
        raise ConfigError("timeout_s and load_timeout_s must be positive")
    logger = get_run_logger()
    name = require_node(node)
    results = preflight_report(name, Limits(timeout_s, load_timeout_s, min_free_gib, min_gpu_free_mib))
    log = {OK: logger.info, WARN: logger.warning, FAIL: logger.error}
    for result, line in zip(results, checks.format_lines(results), strict=True):
        log[result.status](line)
    create_table_artifact(
        key="preflight-report", table=[asdict(r) for r in results], description=checks.summary(name, results)
    )
    if bad := checks.failed(results):
        raise PreflightFailed(f"preflight of {name}: {len(bad)} failed: {', '.join(r.name for r in bad)}")
    return [asdict(r) for r in results]
