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
   their limit to one;
5. creates the notification block ``swarm-alerts`` (a webhook to ``SWARM_ALERT_WEBHOOK_URL``) if missing,
   and creates or replaces the automations of ``deployments/automations/*.yaml`` by name.
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

import yaml

HERE = Path(__file__).resolve().parent
POOLS = ("oracle", "starlord", "thanos")
GPU_LIMITS = {"gpu:starlord": 1, "gpu:thanos": 1}
ALERT_BLOCK = "swarm-alerts"
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


def ensure_gpu_limits(client: Any) -> list[str]:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    for name, slots in GPU_LIMITS.items():
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
            continue
        if existing.limit != slots or not existing.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
    return list(GPU_LIMITS)


def ensure_alert_block() -> str:
    """The webhook the automations notify through; an existing block (edited in the UI) is kept as is."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.common.blocks import find_block

    block = find_block(CustomWebhookNotificationBlock, ALERT_BLOCK)
    if block is None:
        url = os.environ.get("SWARM_ALERT_WEBHOOK_URL", "http://127.0.0.1:9093/swarm-alerts")
        block = CustomWebhookNotificationBlock(
            name=ALERT_BLOCK, url=url, json_data={"title": "{{subject}}", "text": "{{body}}"}
        )
        block.save(ALERT_BLOCK)
        block = CustomWebhookNotificationBlock.load(ALERT_BLOCK)
    return str(block._block_document_id)


def resolve_block_refs(spec: Any, block_ids: dict[str, str]) -> Any:
    """Replace ``"block:<name>"`` values (block document ids are only known on a given server)."""
    if isinstance(spec, dict):
        return {k: resolve_block_refs(v, block_ids) for k, v in spec.items()}
    if isinstance(spec, list):
        return [resolve_block_refs(v, block_ids) for v in spec]
    if isinstance(spec, str) and spec.startswith(BLOCK_REF):
        return block_ids[spec.removeprefix(BLOCK_REF)]
    return spec


def load_automations(folder: Path, block_ids: dict[str, str]) -> list[Any]:
    from prefect.automations import Automation

    return [
        Automation.model_validate(resolve_block_refs(yaml.safe_load(path.read_text()), block_ids))
        for path in sorted(folder.glob("*.yaml"))
    ]


def ensure_automations(client: Any, folder: Path) -> list[str]:
    from prefect.events.schemas.automations import AutomationCore

    names = []
    for automation in load_automations(folder, {ALERT_BLOCK: ensure_alert_block()}):
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
        done["concurrency_limits"] = ensure_gpu_limits(client)
        done["automations"] = ensure_automations(client, folder / "automations")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=HERE, help="where work-pools/ and automations/ are")
    args = parser.parse_args(argv)
    for kind, names in bootstrap(args.folder).items():
        print(f"{kind}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
