"""rag-sync's batch jobs, and sending them to the ingest-batch deployment on another node (thanos).

A sync's plan becomes the same jobs however it runs them (``plan_jobs``): the first job also carries the removals
and renames, and every job ends with the publish step, so whichever finishes the re-embedding swaps the alias.
rag-sync runs them in its own run or as runs of a deployment, a bounded number at a time. The window logic is
plain code over two callables (start a child run, read child states), so it is tested without a server;
``deployment_runner`` binds them to Prefect's ``run_deployment`` and client.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from flows.common.errors import ConfigError, SwarmError
from flows.rag.plan import SyncPlan
from flows.rag.sources.base import DocumentRef, iter_batches


@dataclass(frozen=True)
class BatchJob:
    """One batch of a sync: documents to ingest, and (the first batch only) removals and renames to apply."""

    label: str
    documents: tuple[DocumentRef, ...]
    removed: tuple[str, ...] = ()
    refreshed: tuple[DocumentRef, ...] = ()

    @property
    def doc_ids(self) -> set[str]:
        return {ref.doc_id for ref in self.documents}


def plan_jobs(plan: SyncPlan, batch_files: int, publish_pending: bool) -> list[BatchJob]:
    """The sync's jobs, ``batch_files`` documents each. With nothing to ingest, one empty job still applies the
    removals and renames, or publishes a model change left unpublished; with nothing at all, no job."""
    batches = list(iter_batches(plan.to_ingest, batch_files))
    if not batches and (plan.has_work or publish_pending):
        batches = [[]]
    return [
        BatchJob(f"{number:04d}", tuple(batch), *((tuple(plan.removed), tuple(plan.refreshed)) if number == 1 else ()))
        for number, batch in enumerate(batches, start=1)
    ]


@dataclass(frozen=True)
class ChildState:
    type: str  # Prefect StateType value: COMPLETED, FAILED, CRASHED, CANCELLED, RUNNING, ...
    name: str
    message: str | None = None

    @property
    def final(self) -> bool:
        return self.type in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class ChildOutcome:
    label: str
    run_id: UUID
    state: ChildState


def batch_key(parent_run: str, source_id: str, job: BatchJob) -> str:
    """Same parent run + same batch content → same key, so a retried parent reuses its child runs instead
    of launching the batch twice. The parent run id is part of it on purpose: a *new* sync must be able to
    re-try a batch whose earlier child failed (a content-only key would hand back that failed run forever)."""
    digest = hashlib.sha256(f"{parent_run}\n{source_id}\n".encode())
    for ref in sorted(job.documents, key=lambda r: r.doc_id):
        digest.update(f"+{ref.doc_id}\0{ref.version}\n".encode())
    for doc_id in sorted(job.removed):
        digest.update(f"-{doc_id}\n".encode())
    return f"ingest-batch-{digest.hexdigest()[:40]}"


def child_parameters(source: dict[str, Any], job: BatchJob, config: dict[str, Any]) -> dict[str, Any]:
    """JSON parameters of the ingest-batch run of ``job``: references only (ids, versions, paths), never content;
    ``config`` is the sync's explicit settings (``RagConfig.overrides()``), blocks by name, no secret."""
    return {
        "source": source,
        "documents": [dataclasses.asdict(ref) for ref in job.documents],
        "config": config,
        "batch_label": job.label,
        "removed": list(job.removed),
        "refreshed": [dataclasses.asdict(ref) for ref in job.refreshed],
        "publish": True,
    }


def run_window(
    jobs: Sequence[BatchJob],
    start: Callable[[BatchJob], UUID],
    read_states: Callable[[list[UUID]], dict[UUID, ChildState]],
    max_in_flight: int,
    poll_s: float = 2.0,
    on_finished: Callable[[ChildOutcome], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ChildOutcome]:
    """Start jobs while fewer than ``max_in_flight`` are unfinished; return every outcome in job order.
    A failed child does not stop the others: the rest of the batches still get indexed."""
    waiting = list(jobs)
    in_flight: dict[UUID, BatchJob] = {}
    outcomes: dict[str, ChildOutcome] = {}
    while waiting or in_flight:
        while waiting and len(in_flight) < max_in_flight:
            job = waiting.pop(0)
            in_flight[start(job)] = job
        states = read_states(list(in_flight))
        for run_id, state in states.items():
            if state.final and run_id in in_flight:
                outcome = ChildOutcome(in_flight.pop(run_id).label, run_id, state)
                outcomes[outcome.label] = outcome
                if on_finished:
                    on_finished(outcome)
        if in_flight and not any(s.final for s in states.values()):
            sleep(poll_s)
    return [outcomes[job.label] for job in jobs]


def raise_for_failures(outcomes: Sequence[ChildOutcome], deployment: str) -> None:
    bad = [o for o in outcomes if o.state.type != "COMPLETED"]
    if bad:
        details = "; ".join(
            f"batch {o.label} (run {o.run_id}) ended {o.state.name}"
            + (f": {o.state.message}" if o.state.message else "")
            for o in bad[:5]
        )
        raise SwarmError(f"{len(bad)} of {len(outcomes)} {deployment} runs did not complete: {details}")


def check_deployment(name: str) -> None:
    """Fail before any work when the target deployment does not exist (a typo, or not deployed yet)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigError(
                f"ingest_deployment: no deployment named {name!r} (run `prefect deploy --all` first)"
            ) from None


def deployment_runner(
    name: str, parameters: Callable[[BatchJob], dict[str, Any]], key: Callable[[BatchJob], str]
) -> tuple[Callable[[BatchJob], UUID], Callable[[list[UUID]], dict[UUID, ChildState]]]:
    """``start`` and ``read_states`` bound to Prefect: each job becomes a run of deployment ``name`` with
    ``parameters(job)`` and idempotency key ``key(job)``, linked to the calling flow run as a subflow and created
    with ``timeout=0`` so this process does the (bounded) waiting itself."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    def start(job: BatchJob) -> UUID:
        run = run_deployment(
            name,
            parameters=parameters(job),
            idempotency_key=key(job),
            timeout=0,
            as_subflow=True,
            flow_run_name=f"ingest-{job.label}",
        )
        return run.id

    def read_states(ids: list[UUID]) -> dict[UUID, ChildState]:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids))
        states: dict[UUID, ChildState] = {}
        for run in runs:
            if run.state is not None:
                states[run.id] = ChildState(run.state.type.value, run.state.name, run.state.message)
        return states

    return start, read_states
