"""rag-sync: bring the vector store in line with a source.

Pool: oracle. Asks the source what changed since the stored cursor, diffs it against the ledger, deletes
removed documents' points, refreshes renamed ones' payloads, and ingests new and changed documents in
batches (ingest-batch, in-process here). Reads the source and the ledger; writes Qdrant and the ledger.
Safe to re-run at any time, also after a crash: the ledger says what is still to do.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import progress
from flows.rag.config import RagConfig, load_config
from flows.rag.ingest import ingest_batch
from flows.rag.plan import SyncPlan, known_documents, plan_sync
from flows.rag.report import render_sync_report
from flows.rag.services import RagServices, SourceSpec, open_services
from flows.rag.sources.base import ChangeSet, Source, iter_batches


@task(task_run_name="plan-{source.kind}", cache_policy=NO_CACHE)
def plan_changes(services: RagServices, source: SourceSpec, src: Source) -> tuple[SyncPlan, ChangeSet]:
    ledger = services.ledger
    entries = ledger.entries(src.source_id)
    changes = src.changes(ledger.get_cursor(src.source_id), known_documents(entries))
    return plan_sync(changes, entries, services.config.embedding_model), changes


@task(cache_policy=NO_CACHE)
def apply_removals_and_renames(services: RagServices, src: Source, plan: SyncPlan) -> None:
    """Cheap changes that need no parsing: delete removed documents, refresh renamed ones' payloads."""
    services.store.delete_documents(src.source_id, plan.removed)
    services.ledger.mark_deleted(src.source_id, plan.removed)
    for ref in plan.refreshed:
        services.store.set_document_metadata(
            src.source_id, ref.doc_id, {"title": ref.name, "path": ref.path, "modified": ref.modified}
        )
    services.ledger.refresh_metadata(src.source_id, plan.refreshed)


def _publish_if_complete(services: RagServices) -> None:
    """After a model change, swap the alias to the new collection once no document of any source is
    left to re-embed, then drop the old collection: readers switch atomically and never see a gap."""
    store = services.store
    previous = store.alias_target()
    if previous != store.collection and not services.ledger.documents_not_on(services.config.embedding_model):
        store.publish()
        if previous:
            store.client.delete_collection(previous)


@flow(name="rag-sync")
def rag_sync(source: SourceSpec, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sync ``source`` into the vector store. ``config``: RagConfig overrides (see flows/rag/config.py)."""
    started = time.perf_counter()
    settings: RagConfig = load_config(config)
    services = open_services(settings)
    src = services.source(source)
    run_id = services.ledger.start_run("rag-sync", src.source_id)
    status = "failed"
    stats: dict[str, Any] = {}
    try:
        plan, changes = plan_changes(services, source, src)
        apply_removals_and_renames(services, src, plan)
        todo = plan.to_ingest
        progress.report("planned", len(todo))
        progress_id = create_progress_artifact(0.0, key="rag-sync-progress", description="files ingested")
        totals = {"indexed": 0, "skipped": 0, "failed": 0, "chunks": 0, "split_chunks": 0}
        for number, batch in enumerate(iter_batches(todo, settings.batch_files), start=1):
            result = ingest_batch(source, batch, settings.overrides(), f"{number:04d}")
            for key in totals:
                totals[key] += result[key]
            done = min(number * settings.batch_files, len(todo))
            update_progress_artifact(progress_id, progress=100.0 * done / max(1, len(todo)))
        update_progress_artifact(progress_id, progress=100.0)
        _publish_if_complete(services)
        services.ledger.set_cursor(src.source_id, changes.next_cursor)
        stats = {
            "source": src.source_id,
            "files_seen": len(changes.documents),
            "new": len(plan.new),
            "changed": len(plan.changed),
            "unchanged": plan.unchanged,
            "renamed": len(plan.refreshed),
            "removed": len(plan.removed),
            **totals,
            "seconds": round(time.perf_counter() - started, 2),
            "problems": [list(p) for p in services.ledger.problems(src.source_id)],
        }
        status = "completed"
    finally:
        services.ledger.finish_run(run_id, status, stats)
    create_markdown_artifact(render_sync_report(stats), key="rag-sync-report", description="rag-sync summary")
    return stats
