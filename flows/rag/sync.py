"""rag-sync: bring the vector store in line with a source.

Pool: oracle for Google Drive; a local folder is synced in-process on the node that has it (thanos).
Asks the source what changed since the stored cursor, diffs it against the ledger, and applies it: removed
documents' points deleted, renamed ones' payloads refreshed, new and changed documents ingested in batches.
``dispatch="in-process"`` runs ingest-batch here; ``dispatch="deployment"`` sends each batch (and the
removals) to the ``ingest-batch/thanos`` deployment, at most ``max_in_flight`` at once, and waits for all of
them; rag-sync then never opens Qdrant itself (embedded Qdrant admits one process).
Reads the source and the ledger; writes Qdrant and the ledger (itself or through its children).
Safe to re-run at any time, also after a crash: the ledger says what is still to do, and the cursor is only
saved once every batch completed. The embedding model is decided once per sync (``choose_model``) and
travels with every batch, so nodes with different ``SWARM_EMBEDDING_MODEL`` settings never re-embed silently,
and a model migration that an explicit run left unfinished is carried on by the next syncs, not undone.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from flows.common import progress
from flows.common.errors import ConfigError
from flows.rag import dispatch as remote
from flows.rag.config import RagConfig, load_config
from flows.rag.housekeeping import apply_removals_and_renames, publish_if_complete, publish_pending
from flows.rag.ingest import ingest_batch
from flows.rag.plan import ModelChoice, SyncPlan, choose_model, known_documents, plan_sync
from flows.rag.report import render_sync_report
from flows.rag.services import RagServices, SourceSpec, open_services
from flows.rag.sources.base import ChangeSet, Source, iter_batches
from flows.rag.sources.local import LocalFolderSpec

Dispatch = Literal["in-process", "deployment"]
DeploymentName = Annotated[str, Field(pattern=r"^[^/\s]+/[^/\s]+$", description="<flow name>/<deployment name>")]
InFlight = Annotated[int, Field(ge=1, le=64, description="Child runs started and unfinished at once.")]
_LISTED_PROBLEMS = 50  # unreadable and skipped entries listed in the report; the count is always complete


def check_source_here(source: SourceSpec, dispatch: Dispatch) -> None:
    """Refusals that need nothing opened. A local folder is read on the node that runs rag-sync: dispatched
    batches would open the same path on the ingest node, where it is absent or another folder."""
    if isinstance(source, LocalFolderSpec):
        if dispatch == "deployment":
            raise ConfigError(
                "dispatch: a local folder cannot be dispatched (each batch would open the path on the ingest node);"
                " run rag-sync on the node that has the folder with dispatch 'in-process'"
            )
        source.check()


def model_choice(settings: RagConfig, services: RagServices) -> ModelChoice:
    """The sync's one model (see ``choose_model``), from the run's config and the alias's row in the ledger."""
    explicit = settings.embedding_model if "embedding_model" in settings.overrides() else None
    alias, ledger = services.config.collection, services.ledger
    published, migrating = ledger.published_model(alias), ledger.migration_target(alias)
    return choose_model(explicit, published, settings.embedding_model, alias, migrating)


def use_model(settings: RagConfig, services: RagServices, model: str) -> tuple[RagConfig, RagServices]:
    """``model`` set explicitly, so that it travels in every batch's config."""
    services = dataclasses.replace(services, config=services.config.with_explicit(embedding_model=model))
    return settings.with_explicit(embedding_model=model), services


def decide_model(settings: RagConfig, services: RagServices) -> tuple[RagConfig, RagServices, str | None]:
    """The model a sync would use, for readers (rag-verify): nothing is recorded."""
    choice = model_choice(settings, services)
    return *use_model(settings, services, choice.model), choice.warning


def listing_warning(changes: ChangeSet, plan: SyncPlan) -> str | None:
    unseen = len(changes.unseen)
    if not unseen:
        return None
    return (
        f"listing incomplete, {unseen} unreadable (see the problems): the {plan.kept_unseen} known documents at or"
        " under them keep their state, nothing there was removed"
    )


def listing_problems(changes: ChangeSet) -> list[list[str]]:
    return [
        [p.path or ".", "unreadable" if p.unseen else "skipped", p.reason] for p in changes.problems[:_LISTED_PROBLEMS]
    ]


@task(task_run_name="plan-{source.kind}", cache_policy=NO_CACHE)
def plan_changes(services: RagServices, source: SourceSpec, src: Source) -> tuple[SyncPlan, ChangeSet]:
    ledger = services.ledger
    entries = ledger.entries(src.source_id)
    changes = src.changes(ledger.get_cursor(src.source_id), known_documents(entries))
    return plan_sync(changes, entries, services.config.embedding_model), changes


@task(task_run_name="apply-removals-and-renames", cache_policy=NO_CACHE)
def apply_cheap_changes(services: RagServices, src: Source, plan: SyncPlan) -> None:
    """Cheap changes that need no parsing: delete removed documents, refresh renamed ones' payloads."""
    apply_removals_and_renames(services, src.source_id, plan.removed, plan.refreshed)


def ingest_here(
    source: SourceSpec, src: Source, settings: RagConfig, services: RagServices, plan: SyncPlan
) -> dict[str, Any]:
    apply_cheap_changes(services, src, plan)
    todo = plan.to_ingest
    progress_id = create_progress_artifact(0.0, key="rag-sync-progress", description="files ingested")
    totals: dict[str, Any] = {"indexed": 0, "skipped": 0, "failed": 0, "chunks": 0, "split_chunks": 0}
    stage_seconds = {"embed": 0.0, "write": 0.0, "batches": 0.0}
    for number, batch in enumerate(iter_batches(todo, settings.batch_files), start=1):
        result = ingest_batch(source, batch, settings.overrides(), f"{number:04d}")
        for key in totals:
            totals[key] += result[key]
        stage_seconds["embed"] += result["seconds"]["embed"]
        stage_seconds["write"] += result["seconds"]["write"]
        stage_seconds["batches"] += result["seconds"]["total"]
        done = min(number * settings.batch_files, len(todo))
        update_progress_artifact(progress_id, progress=100.0 * done / max(1, len(todo)))
    update_progress_artifact(progress_id, progress=100.0)
    if plan.has_work or publish_pending(services):  # a no-op sync never opens the store
        publish_if_complete(services)
    totals["stage_seconds"] = {k: round(v, 2) for k, v in stage_seconds.items()}
    return totals


def ingest_remote(
    source: SourceSpec,
    src: Source,
    settings: RagConfig,
    services: RagServices,
    plan: SyncPlan,
    deployment: str,
    max_in_flight: int,
) -> dict[str, Any]:
    """One child run per batch on the target deployment; removals and renames ride with the first one.
    With nothing to ingest, one empty child still applies them, or publishes a model change left unpublished."""
    todo = plan.to_ingest
    batches = list(iter_batches(todo, settings.batch_files))
    if not batches and (plan.has_work or publish_pending(services)):
        batches = [[]]
    parent = str(flow_run.get_id() or "no-flow-run")
    source_params = source.model_dump(mode="json")
    jobs = []
    for number, batch in enumerate(batches, start=1):
        removed, refreshed = (plan.removed, plan.refreshed) if number == 1 else ([], [])
        label = f"{number:04d}"
        jobs.append(
            remote.BatchJob(
                label=label,
                parameters=remote.child_parameters(
                    source_params, batch, settings.overrides(), label, removed, refreshed
                ),
                key=remote.batch_key(parent, src.source_id, batch, removed),
                doc_ids=tuple(ref.doc_id for ref in batch),
            )
        )
    progress_id = create_progress_artifact(0.0, key="rag-sync-progress", description="batches finished")
    finished: list[remote.ChildOutcome] = []

    def on_finished(outcome: remote.ChildOutcome) -> None:
        finished.append(outcome)
        update_progress_artifact(progress_id, progress=100.0 * len(finished) / len(jobs))

    start, read_states = remote.deployment_runner(deployment)
    outcomes = remote.run_window(jobs, start, read_states, max_in_flight, on_finished=on_finished)
    remote.raise_for_failures(outcomes, deployment)
    update_progress_artifact(progress_id, progress=100.0)
    totals: dict[str, Any] = remote.ledger_totals(services.db, src.source_id, {ref.doc_id for ref in todo})
    totals["child_runs"] = [str(o.run_id) for o in outcomes]
    return totals


@flow(name="rag-sync")
def rag_sync(
    source: SourceSpec,
    config: dict[str, Any] | None = None,
    dispatch: Dispatch = "in-process",
    ingest_deployment: DeploymentName = "ingest-batch/thanos",
    max_in_flight: InFlight = 2,
) -> dict[str, Any]:
    """Sync ``source`` into the vector store. ``config``: RagConfig overrides (see flows/rag/config.py).
    ``dispatch="deployment"`` runs each batch as a run of ``ingest_deployment`` (on its node's pool)."""
    started = time.perf_counter()
    settings: RagConfig = load_config(config)  # a bad setting fails here, naming it, before any work
    check_source_here(source, dispatch)
    if dispatch == "deployment":
        remote.check_deployment(ingest_deployment)
    services = open_services(settings)  # the store opens only when there is work for it
    choice = model_choice(settings, services)
    settings, services = use_model(settings, services, choice.model)
    # Recorded before any work: a run that fails midway leaves the migration to the next sync, scheduled or not.
    services.ledger.set_migration_target(services.config.collection, choice.migration)
    log = get_run_logger()
    if choice.warning:
        log.warning(choice.warning)
    if choice.notice:
        log.info(choice.notice)
    src = services.source(source)
    run_id = services.ledger.start_run("rag-sync", src.source_id)
    status = "failed"
    stats: dict[str, Any] = {}
    try:
        plan, changes = plan_changes(services, source, src)
        incomplete = listing_warning(changes, plan)
        if incomplete:
            log.warning(incomplete)
        warnings = [w for w in (choice.warning, incomplete) if w]
        progress.report("planned", len(plan.to_ingest))
        if dispatch == "deployment":
            totals = ingest_remote(source, src, settings, services, plan, ingest_deployment, max_in_flight)
        else:
            totals = ingest_here(source, src, settings, services, plan)
        services.ledger.set_cursor(src.source_id, changes.next_cursor)
        stats = {
            "source": src.source_id,
            "dispatch": dispatch,
            "files_seen": len(changes.documents),
            "new": len(plan.new),
            "changed": len(plan.changed),
            "unchanged": plan.unchanged,
            "renamed": len(plan.refreshed),
            "removed": len(plan.removed),
            "unreadable": len(changes.unseen),
            "kept_unseen": plan.kept_unseen,
            **totals,
            "seconds": round(time.perf_counter() - started, 2),
            "embedding_model": services.config.embedding_model,
            "warnings": warnings,
            "problems": [list(p) for p in services.ledger.problems(src.source_id)] + listing_problems(changes),
        }
        status = "completed"
    finally:
        services.ledger.finish_run(run_id, status, stats)
    create_markdown_artifact(render_sync_report(stats), key="rag-sync-report", description="rag-sync summary")
    return stats
