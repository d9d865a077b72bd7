"""Set up a Prefect server for the swarm: safe to run any number of times (every step is create-or-update).

    PREFECT_API_URL=http://oracle:4200/api python -m deployments.bootstrap

1. registers the block types of ``blocks/`` (what ``prefect block register -m blocks`` does);
2. saves a ``NodeSettings`` block ``node-<pool>`` for each node from the ``node`` values of
   ``deployments/work-pools/<pool>.json``, only when it is missing: a block edited in the UI is kept, and is
   from then on the source of truth for that node;
3. creates or updates the process work pools ``oracle``, ``starlord``, ``thanos`` (description and pool
   concurrency from the same JSON), whose base job template's ``env`` (the defaults of every run on the
   pool) is the ``env()`` of the saved ``node-<pool>`` block: edit the block, re-run, and the pool follows;
4. creates the global concurrency limits ``gpu:starlord`` and ``gpu:thanos`` (one slot each) or resets
   their limit to one, and one rate limit ``drive-units:<project>`` per Google project of the saved
   GoogleDriveCredentials blocks (Drive quota units per minute, shared by every sync: flows/rag/sources/
   gdrive_client.py), or resets it to its units and decay;
5. saves the Webhook block ``swarm-alertmanager`` (Alertmanager's ``/api/v2/alerts`` at
   ``SWARM_ALERTMANAGER_URL``) when that is set; with neither the setting nor a saved block it warns that
   alerts have no target and leaves out the automations that alert;
6. creates or replaces the automations of ``deployments/automations/*.yaml`` by name;
7. names the concurrency limit of each deployment already deployed ``deployment:<flow>:<deployment>`` (the
   server names it ``deployment:<uuid>``): run the bootstrap again after a ``prefect deploy`` that adds one.
Service blocks (PostgresLedger, QdrantConnection, RedisServer, OpenAICompatibleEndpoint, SearxngServer) hold
credentials this command cannot know: save them yourself (README) and name them in the flows' ``*_block``
parameters. Then deploy with ``prefect --no-prompt deploy --all``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from flows.common.errors import ConfigError, SwarmError
from flows.common.nodes import NODES

HERE = Path(__file__).resolve().parent
POOLS = NODES
GPU_LIMITS = {"gpu:starlord": 1, "gpu:thanos": 1}
ALERT_BLOCK = "swarm-alertmanager"
ALERTMANAGER_ENV = "SWARM_ALERTMANAGER_URL"
ALERTS_API = "/api/v2/alerts"
NO_ALERT_TARGET = (
    f"WARNING: no alert target: {ALERTMANAGER_ENV} is not set and no Webhook block {ALERT_BLOCK!r} is saved, "
    "so the automations that alert (service down, backup failed or missing) were not created. "
    f"Set {ALERTMANAGER_ENV}=http://oracle:9093 (Alertmanager) and run the bootstrap again."
)
BLOCK_REF = "block:"


def register_blocks() -> list[str]:
    from prefect.blocks.core import Block

    import blocks

    names = []
    for name in blocks.__all__:
        cls = getattr(blocks, name)
        if isinstance(cls, type) and issubclass(cls, Block):
            cls.register_type_and_schema()
            names.append(cls.get_block_type_slug())
    return names


def node_block_name(pool: str) -> str:
    return f"node-{pool}"


def ensure_node_block(pool: str, values: dict[str, Any]) -> Any:
    """The saved ``node-<pool>`` block; saved from ``values`` only when missing (an edited block is kept)."""
    from blocks.node import NodeSettings
    from flows.common.blocks import find_block

    name = node_block_name(pool)
    block = find_block(NodeSettings, name)
    if block is None:
        block = NodeSettings(**values)
        block.save(name)
    return block


def pool_template(env: dict[str, str]) -> dict[str, Any]:
    """Prefect's process-worker template with this node's env as the default of every run's ``env``."""
    from prefect.workers.process import ProcessWorker

    template = copy.deepcopy(ProcessWorker.get_default_base_job_template())
    template["variables"]["properties"]["env"]["default"] = dict(env)
    return template


def ensure_pools(client: Any, pool_dir: Path) -> list[str]:
    from prefect.client.schemas.actions import WorkPoolCreate

    for pool in POOLS:
        settings = json.loads((pool_dir / f"{pool}.json").read_text())
        node = ensure_node_block(pool, settings["node"])
        client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type="process",
                description=settings.get("description"),
                base_job_template=pool_template(node.env()),
                concurrency_limit=settings.get("concurrency_limit"),
            ),
            overwrite=True,
        )
    return list(POOLS)


def drive_limits(client: Any) -> dict[str, tuple[int, float]]:
    """A rate limit per Google project that a saved GoogleDriveCredentials block's key names: a minute's quota
    units as slots, decaying at a minute's worth per 60 s (flows/rag/sources/gdrive_quota.py)."""
    from prefect.exceptions import PrefectHTTPStatusError

    from flows.rag.sources.gdrive_client import info_project
    from flows.rag.sources.gdrive_quota import DEFAULT_UNITS_PER_MINUTE, limit_name

    try:
        docs = client.read_block_documents_by_type("google-drive-credentials", include_secrets=True)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        docs = []  # the block type is not registered yet: no credentials saved, no project to limit
    limits = {}
    for doc in docs:
        info = doc.data.get("service_account_info") or doc.data.get("authorized_user_info") or {}
        limits[limit_name(info_project(info))] = (DEFAULT_UNITS_PER_MINUTE, DEFAULT_UNITS_PER_MINUTE / 60)
    return limits


def ensure_limits(client: Any) -> list[str]:
    """The GPU slots (concurrency limits) and the Drive rate limits, created or reset to their values."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    wanted = {name: (slots, None) for name, slots in GPU_LIMITS.items()} | drive_limits(client)
    for name, (slots, decay) in wanted.items():
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True, slot_decay_per_second=decay or 0.0)
            )
            continue
        if existing.limit != slots or not existing.active or (existing.slot_decay_per_second or 0.0) != (decay or 0.0):
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=slots, active=True, slot_decay_per_second=decay or 0.0)
            )
    return list(wanted)


def name_deployment_limits(client: Any) -> list[str]:
    """Rename each deployment's concurrency limit from the server's ``deployment:<uuid>`` to
    ``deployment:<flow>:<deployment>``.

    The server creates that limit when a deployment with a ``concurrency_limit`` is deployed and finds it by id,
    so the new name keeps the limit, its slots and its collision strategy, and a later ``prefect deploy`` with
    the same limit leaves it as it is; the server deletes it with the deployment or when the limit is taken
    out of prefect.yaml. (A limit created here and linked to the deployment would be deleted by the next
    ``prefect deploy``, which sends no limit id: checked on 3.9.1.)"""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    flows = {f.id: f.name for f in client.read_flows()}
    names = []
    for deployment in client.read_deployments():
        if (limit := deployment.global_concurrency_limit) is None:
            continue
        # The deployment's own name, as the Concurrency page shows it ("/" is not allowed in a limit's name).
        name = f"deployment:{flows[deployment.flow_id]}:{deployment.name}"
        if limit.name != name:
            client.update_global_concurrency_limit(limit.name, GlobalConcurrencyLimitUpdate(name=name))
        names.append(name)
    return sorted(names)


def alertmanager_alerts_url(base: str) -> str:
    """Alertmanager's alerts endpoint from its base URL (``http://oracle:9093``; the endpoint itself is accepted)."""
    parts = urlsplit(base.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{ALERTMANAGER_ENV} must be Alertmanager's http(s) URL like http://oracle:9093, got {base!r}"
        )
    return base.strip().rstrip("/").removesuffix(ALERTS_API) + ALERTS_API


def alert_webhook(url: str) -> Any:
    """The Webhook block the automations post alerts through (their payloads are Alertmanager's JSON list)."""
    from prefect.blocks.webhook import Webhook

    # Alertmanager answers 415 to a body without this header, and Prefect counts any answer a success.
    return Webhook(method="POST", url=url, headers={"Content-Type": "application/json"})


def ensure_alert_block() -> str | None:
    """The id of the Webhook block the automations post alerts through, or None when there is no target.

    ``SWARM_ALERTMANAGER_URL`` set: the block is saved with it (created, or its URL updated). Unset: a saved
    block (edited in the UI) is kept as is."""
    from prefect.blocks.webhook import Webhook

    from flows.common.blocks import find_block

    block = find_block(Webhook, ALERT_BLOCK)
    base = os.environ.get(ALERTMANAGER_ENV, "").strip()
    if base:
        url = alertmanager_alerts_url(base)
        if block is None or block.url.get_secret_value() != url:
            alert_webhook(url).save(ALERT_BLOCK, overwrite=True)
            block = Webhook.load(ALERT_BLOCK)
    return None if block is None else str(block._block_document_id)


def block_refs(spec: Any) -> set[str]:
    """The names of the ``"block:<name>"`` values in an automation spec."""
    if isinstance(spec, dict):
        return set().union(*map(block_refs, spec.values()))
    if isinstance(spec, list):
        return set().union(*map(block_refs, spec))
    if isinstance(spec, str) and spec.startswith(BLOCK_REF):
        return {spec.removeprefix(BLOCK_REF)}
    return set()


def resolve_block_refs(spec: Any, block_ids: dict[str, str]) -> Any:
    """Replace ``"block:<name>"`` values (block document ids are only known on a given server)."""
    if isinstance(spec, dict):
        return {k: resolve_block_refs(v, block_ids) for k, v in spec.items()}
    if isinstance(spec, list):
        return [resolve_block_refs(v, block_ids) for v in spec]
    if isinstance(spec, str) and spec.startswith(BLOCK_REF):
        return block_ids[spec.removeprefix(BLOCK_REF)]
    return spec


def load_automations(folder: Path, block_ids: dict[str, str], left_out: frozenset[str] = frozenset()) -> list[Any]:
    """The automations of ``folder``, without those that need a block named in ``left_out``."""
    from prefect.automations import Automation

    specs = [yaml.safe_load(path.read_text()) for path in sorted(folder.glob("*.yaml"))]
    return [
        Automation.model_validate(resolve_block_refs(spec, block_ids))
        for spec in specs
        if not block_refs(spec) & left_out
    ]


def ensure_automations(client: Any, folder: Path) -> list[str]:
    from prefect.events.schemas.automations import AutomationCore

    alert_block = ensure_alert_block()
    block_ids, left_out = {}, frozenset({ALERT_BLOCK})
    if alert_block:
        block_ids, left_out = {ALERT_BLOCK: alert_block}, frozenset()
    else:
        print(NO_ALERT_TARGET, file=sys.stderr)
    names = []
    for automation in load_automations(folder, block_ids, left_out):
        existing = client.read_automations_by_name(automation.name)
        if existing:
            # the update endpoint refuses owner_resource, the create endpoint accepts it
            client.update_automation(
                existing[0].id, AutomationCore(**automation.model_dump(exclude={"id", "owner_resource"}))
            )
            for extra in existing[1:]:  # duplicates from an older, non-idempotent setup
                client.delete_automation(extra.id)
        else:
            client.create_automation(AutomationCore(**automation.model_dump(exclude={"id"})))
        names.append(automation.name)
    return names


def bootstrap(folder: Path = HERE) -> dict[str, list[str]]:
    from prefect import get_client

    done: dict[str, list[str]] = {"blocks": register_blocks()}
    with get_client(sync_client=True) as client:
        done["work_pools"] = ensure_pools(client, folder / "work-pools")
        done["node_blocks"] = [node_block_name(pool) for pool in done["work_pools"]]
        done["concurrency_limits"] = ensure_limits(client)
        done["deployment_limits"] = name_deployment_limits(client)
        done["automations"] = ensure_automations(client, folder / "automations")
    return done


def print_preflight() -> None:
    """This node's preflight table (``swarm doctor``), alert target included. The node is SWARM_NODE or the
    host name, else oracle, where the bootstrap runs. Its failures are the operator's to fix (blocks not saved
    yet, folders to create): the bootstrap itself succeeded, so they do not change its exit code."""
    from flows.ops.preflight import load_spec, local_node, preflight_report
    from flows.ops.preflight_checks import format_lines, summary

    node = local_node(None, load_spec()) or "oracle"
    results = preflight_report(node, alert_target=True)
    print("\n".join(format_lines(results)))
    print(summary(node, results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=HERE, help="where work-pools/ and automations/ are")
    args = parser.parse_args(argv)
    try:
        done = bootstrap(args.folder)
    except SwarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, names in done.items():
        print(f"{kind}: {', '.join(names)}")
    print_preflight()
    return 0


if __name__ == "__main__":
    sys.exit(main())
