"""ingest-batch: parse → embed → upsert → ledger for one batch of documents.

Pool: thanos (the GPU node) when rag-sync dispatches to it (deployment ``ingest-batch/thanos``, started
only by rag-sync); otherwise called in-process by rag-sync. A dispatched run also applies the sync's
removals and renames and publishes the collection alias when a model change is complete.
On a GPU node (``gpu_slot`` / ``SWARM_GPU_SLOT``, e.g. ``gpu:thanos``) the indexing holds that global
concurrency slot (strict: a missing limit is an error, never a silent free-for-all).
Reads the source's files, writes Qdrant points and the ledger's document rows.
Safe to re-run: documents left pending by a crash are re-done, point ids are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from flows.rag.config import RagConfig, load_config
from flows.rag.embed import get_embedder
from flows.rag.housekeeping import apply_removals_and_renames, publish_if_complete
from flows.rag.parser_pool import get_parser_pool
from flows.rag.pipeline import BatchIndexer
from flows.rag.services import SourceSpec, open_services
from flows.rag.sources.base import DocumentRef


@contextmanager
def gpu_section(slot: str | None) -> Iterator[None]:
    """Hold the node's GPU slot for the whole indexing (the model's memory is taken for all of it).
    Leases renew in the background; a short API outage must not kill an hour-long batch."""
    guard = concurrency(slot, occupy=1, strict=True, raise_on_lease_renewal_failure=False) if slot else nullcontext()
    with guard:
        yield


@task(task_run_name="index-{batch_label}", cache_policy=NO_CACHE)
def index_documents(
    source: SourceSpec, documents: list[DocumentRef], config: RagConfig, batch_label: str
) -> dict[str, Any]:
    services = open_services(config)
    with gpu_section(config.gpu_slot if documents else None):
        indexer = BatchIndexer(
            source=services.source(source),
            store=services.store,
            ledger=services.ledger,
            load_embedder=partial(get_embedder, config.embedding_model, config.device, config.embed_precision),
            parsers=get_parser_pool(config.parse_workers, config.parse_memory_mb),
            config=services.config,
        )
        return indexer.run(documents).summary()


@task(task_run_name="apply-removals-and-renames", cache_policy=NO_CACHE)
def apply_changes(
    source: SourceSpec, config: RagConfig, removed: list[str], refreshed: list[DocumentRef], publish: bool
) -> None:
    services = open_services(config)
    apply_removals_and_renames(services, services.source(source).source_id, removed, refreshed)
    if publish:
        publish_if_complete(services)


@flow(name="ingest-batch")
def ingest_batch(
    source: SourceSpec,
    documents: list[DocumentRef],
    config: dict[str, Any] | None = None,
    batch_label: str = "batch",
    removed: list[str] | None = None,
    refreshed: list[DocumentRef] | None = None,
    publish: bool = False,
) -> dict[str, Any]:
    """Index ``documents`` of ``source``; ``config`` holds only overrides, the node's environment the rest.
    ``removed``/``refreshed``/``publish``: the sync's cheap changes, when rag-sync runs on another node."""
    settings = load_config(config)
    if removed or refreshed:
        apply_changes(source, settings, removed or [], refreshed or [], False)
    summary = (
        index_documents(source, documents, settings, batch_label)
        if documents
        else {"files": 0, "indexed": 0, "skipped": 0, "failed": 0, "chunks": 0, "split_chunks": 0}
        | {"seconds": {"embed": 0.0, "write": 0.0, "total": 0.0}}
    )
    if publish:
        apply_changes(source, settings, [], [], True)
    return summary
