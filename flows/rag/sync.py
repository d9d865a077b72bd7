"""rag-sync: bring the vector store in line with a source.

Pool: oracle for Google Drive; a local folder is synced in-process on the node that has it (thanos).
Asks the source what changed since the stored cursor, diffs it against the ledger, and turns the plan into batch
jobs (``plan_jobs``): the first carries the removals and renames, each ingests up to ``batch_files`` new and
changed documents, and each ends with the publish step. ``dispatch="in-process"`` runs every job here, with this
run's resources; ``dispatch="deployment"`` runs each as an ``ingest-batch/thanos`` run, at most ``max_in_flight``
at once, and waits for all of them; rag-sync then never opens Qdrant itself (embedded Qdrant admits one process).
Either way the stats are the ledger's record of the sync's documents, and a log line tells each stage.
Reads the source and the ledger; writes Qdrant and the ledger (itself or through its children).
Safe to re-run at any time, also after a crash: the ledger says what is still to do, and the cursor is only
saved once every batch completed. A Drive plan is first cut to the day's Drive budget (flows/rag/pacing.py); a sync
that held documents back does not save the cursor either, so the next run plans them again and goes on.
The embedding model is decided once per sync (``choose_model``) and travels with every batch, so nodes with
different ``SWARM_EMBEDDING_MODEL`` settings never re-embed silently, and a model migration that an explicit run
left unfinished is carried on by the next syncs, not undone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from flows.common import progress
from flows.common.errors import ConfigError
from flows.rag import batches, pacing
from flows.rag.alias import publish_pending
from flows.rag.backfill import render_backfill
from flows.rag.batches import BatchJob
from flows.rag.config import RagConfig, RagOptions, load_config
from flows.rag.ingest_batch import run_batch
from flows.rag.plan import ModelChoice, SyncPlan, choose_model, known_documents, plan_sync
from flows.rag.report import render_sync_report
from flows.rag.resources import RagResources, open_resources
from flows.rag.source_spec import SourceSpec
from flows.rag.sources.base import ChangeSet, Source
from flows.rag.sources.local import LocalFolderSpec

Dispatch = Literal["in-process", "deployment"]
DeploymentName = Annotated[str, Field(pattern=r"^[^/\s]+/[^/\s]+$")]
InFlight = Annotated[int, Field(ge=1, le=64)]
_LISTED_PROBLEMS = 50  # unreadable and skipped entries listed in the report; the count is always complete
# Called when a batch finished: the job, and the child flow run that ran it, or its summary when it ran here.
OnBatch = Callable[[BatchJob, str | None, dict[str, Any] | None], None]


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


def model_choice(resources: RagResources) -> ModelChoice:
    """The sync's one model (see ``choose_model``), from the run's config and the alias's row in the ledger."""
    config, ledger, alias = resources.config, resources.ledger, resources.collection
    explicit = config.embedding_model if "embedding_model" in config.explicit else None
    published, migrating = ledger.published_model(alias), ledger.migration_target(alias)
    return choose_model(explicit, published, config.embedding_model, alias, migrating)


def decide_model(resources: RagResources) -> str | None:
    """Set the model a sync would use, for readers (rag-verify): nothing is recorded. Returns its warning."""
    choice = model_choice(resources)
    resources.use_model(choice.model)
    return choice.warning


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


def planned_line(changes: ChangeSet, plan: SyncPlan, jobs: Sequence[BatchJob]) -> str:
    return (
        f"planned: {len(plan.new)} new, {len(plan.changed)} changed, {len(plan.removed)} removed,"
        f" {len(plan.refreshed)} renamed, {plan.unchanged} unchanged of {_files(len(changes.documents))} seen;"
        f" {len(jobs)} batch{'es' if len(jobs) != 1 else ''}"
    )


def _files(count: int) -> str:
    return f"{count} file{'' if count == 1 else 's'}"


@task(task_run_name="plan-{source.kind}", cache_policy=NO_CACHE)
def plan_changes(resources: RagResources, source: SourceSpec, src: Source) -> tuple[SyncPlan, ChangeSet]:
    ledger = resources.ledger
    entries = ledger.entries(src.source_id)
    changes = src.changes(ledger.get_cursor(src.source_id), known_documents(entries))
    return plan_sync(changes, entries, resources.config.embedding_model), changes


def run_here(resources: RagResources, source: SourceSpec, jobs: Sequence[BatchJob], on_batch: OnBatch) -> list[str]:
    """Every job in this run, with this run's resources; no child runs."""
    for job in jobs:
        on_batch(job, None, run_batch(resources, source, job))
    return []


def run_on_deployment(
    deployment: str,
    max_in_flight: int,
    resources: RagResources,
    source: SourceSpec,
    jobs: Sequence[BatchJob],
    on_batch: OnBatch,
) -> list[str]:
    """Each job as a run of ``deployment``, at most ``max_in_flight`` at once; the child runs' ids."""
    parent = str(flow_run.get_id() or "no-flow-run")
    source_id = resources.source(source).source_id
    source_params, options = source.model_dump(mode="json"), resources.config.overrides()
    start, read_states = batches.deployment_runner(
        deployment,
        parameters=lambda job: batches.child_parameters(source_params, job, options),
        key=lambda job: batches.batch_key(parent, source_id, job),
    )
    by_label = {job.label: job for job in jobs}
    outcomes = batches.run_window(
        jobs, start, read_states, max_in_flight, on_finished=lambda o: on_batch(by_label[o.label], str(o.run_id), None)
    )
    batches.raise_for_failures(outcomes, deployment)
    return [str(o.run_id) for o in outcomes]


def log_publish(log: logging.LoggerAdapter | logging.Logger, resources: RagResources) -> None:
    """Where the alias stands after the batches, from the ledger (a dispatching node never opens the store)."""
    ledger, alias, model = resources.ledger, resources.collection, resources.config.embedding_model
    if ledger.published_model(alias) == model:
        log.info(f"publish: {alias!r} serves {model!r}")
    else:
        left = ledger.documents_not_on(model)
        log.info(f"publish: {alias!r} stays on its model until {left} more documents are on {model!r}")


@flow(name="rag-sync")
def rag_sync(
    source: SourceSpec,
    config: RagOptions | None = None,
    dispatch: Dispatch = "in-process",
    ingest_deployment: DeploymentName = "ingest-batch/thanos",
    max_in_flight: InFlight = 2,
) -> dict[str, Any]:
    """Sync ``source`` into the vector store.

    Args:
        source: What to sync: a local folder on this node, or a Google Drive scope (folders, shared drives).
        config: Settings of this run; an empty field is the node's own (SWARM_<FIELD>), else the default.
        dispatch: in-process: index every batch in this run; deployment: each batch as a run of ingest_deployment.
        ingest_deployment: The deployment (<flow>/<deployment>) that indexes the batches when dispatch is deployment.
        max_in_flight: Batch runs of ingest_deployment started and unfinished at once (1 to 64).
    """
    started = time.perf_counter()
    config = load_config(config)  # a bad setting fails here, naming it, before any work
    check_source_here(source, dispatch)
    if dispatch == "deployment":
        batches.check_deployment(ingest_deployment)
    resources = open_resources(config)  # the store opens only when there is work for it
    choice = model_choice(resources)
    resources.use_model(choice.model)
    # Recorded before any work: a run that fails midway leaves the migration to the next sync, scheduled or not.
    resources.ledger.set_migration_target(resources.collection, choice.migration)
    log = get_run_logger()
    if choice.warning:
        log.warning(choice.warning)
    if choice.notice:
        log.info(choice.notice)
    src = resources.source(source)
    run_id = resources.ledger.start_run("rag-sync", src.source_id)
    status = "failed"
    stats: dict[str, Any] = {}
    try:
        stats = sync_source(resources, source, src, dispatch, ingest_deployment, max_in_flight, log)
        stats["seconds"] = round(time.perf_counter() - started, 2)
        stats["warnings"] = [w for w in (choice.warning, *stats["warnings"]) if w]
        status = "completed"
    finally:
        resources.ledger.finish_run(run_id, status, stats)
    create_markdown_artifact(render_sync_report(stats), key="rag-sync-report", description="rag-sync summary")
    return stats


def sync_source(
    resources: RagResources,
    source: SourceSpec,
    src: Source,
    dispatch: Dispatch,
    ingest_deployment: str,
    max_in_flight: int,
    log: logging.LoggerAdapter | logging.Logger,
) -> dict[str, Any]:
    """Plan, pace (Drive), run the batch jobs (here or on the deployment), save the cursor unless the budget held
    documents back; the stats, the same either way."""
    config: RagConfig = resources.config
    plan, changes = plan_changes(resources, source, src)
    # A Drive plan is cut to the day's budget; what waits is planned again by the next run (no cursor saved).
    plan, backfill = pacing.pace_sync(resources, src, plan, pacing.clock())
    if backfill is not None:
        create_markdown_artifact(render_backfill(backfill), key="rag-backfill", description="Drive backfill")
        if backfill.paced:
            log.info(
                f"paced: {backfill.admitted_files} files admitted today, {backfill.remaining_files} wait for the"
                f" next runs (Drive budget of {backfill.day}); all admitted by {backfill.eta:%Y-%m-%d %H:%M} UTC"
            )
    incomplete = listing_warning(changes, plan)
    if incomplete:
        log.warning(incomplete)
    jobs = batches.plan_jobs(plan, config.batch_files, plan.has_work or publish_pending(resources))
    log.info(planned_line(changes, plan, jobs))
    progress.report("planned", len(plan.to_ingest))
    progress_id = create_progress_artifact(0.0, key="rag-sync-progress", description="batches finished")
    finished: list[BatchJob] = []
    # Measured where the batch ran: here, or in each child run (its logs); None in a dispatched sync's stats.
    stage = {"embed": 0.0, "write": 0.0}

    def on_batch(job: BatchJob, child_run: str | None, summary: dict[str, Any] | None) -> None:
        finished.append(job)
        if summary:
            stage["embed"] += summary["seconds"]["embed"]
            stage["write"] += summary["seconds"]["write"]
        if job.removed or job.refreshed:
            log.info(f"removals: {len(job.removed)} removed, {len(job.refreshed)} renamed (batch {job.label})")
        done = resources.ledger.outcome_totals(src.source_id, job.doc_ids)
        log.info(
            f"batch {job.label}: {_files(len(job.documents))}, {done['indexed']} indexed, {done['skipped']} skipped,"
            f" {done['failed']} failed" + (f" (run {child_run})" if child_run else "")
        )
        update_progress_artifact(progress_id, progress=100.0 * len(finished) / max(1, len(jobs)))

    batch_started = time.perf_counter()
    if dispatch == "deployment":
        batch_runs = run_on_deployment(ingest_deployment, max_in_flight, resources, source, jobs, on_batch)
    else:
        batch_runs = run_here(resources, source, jobs, on_batch)
    update_progress_artifact(progress_id, progress=100.0)
    if jobs:
        log_publish(log, resources)
    if api := pacing.drive_api(src):
        pacing.book_calls(resources.ledger.db, api, pacing.clock())  # calls made by this run's own batches
    if backfill is None or not backfill.paced:
        resources.ledger.set_cursor(src.source_id, changes.next_cursor)
    return {
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
        **resources.ledger.outcome_totals(src.source_id, {ref.doc_id for ref in plan.to_ingest}),
        "batches": len(jobs),
        "batch_runs": batch_runs,
        "stage_seconds": {
            **{k: round(v, 2) if dispatch == "in-process" else None for k, v in stage.items()},
            "batches": round(time.perf_counter() - batch_started, 2),
        },
        "embedding_model": config.embedding_model,
        "warnings": [incomplete] if incomplete else [],
        "problems": [list(p) for p in resources.ledger.problems(src.source_id)] + listing_problems(changes),
        "backfill": backfill.as_dict() if backfill else None,
    }
