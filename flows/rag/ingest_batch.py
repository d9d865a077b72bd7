"""ingest-batch: one batch of a sync: removals and renames, parse → embed → upsert → ledger, then publish.

Pool: thanos (the GPU node) when rag-sync dispatches to it (deployment ``ingest-batch/thanos``, started
only by rag-sync); rag-sync running in-process calls ``run_batch`` itself, with its own resources, so both ways
do the same steps. The first batch of a sync also applies its removals and renames; every batch ends by
publishing the collection alias when a model change is complete.
On a GPU node (``gpu_slot`` / ``SWARM_GPU_SLOT``, e.g. ``gpu:thanos``) the indexing holds that global
concurrency slot (strict: a missing limit is an error, never a silent free-for-all).
Reads the source's files, writes Qdrant points and the ledger's document rows.
Safe to re-run: documents left pending by a crash are re-done, point ids are deterministic.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common.gpu import gpu_section
from flows.rag.alias import publish_if_complete
from flows.rag.batches import BatchJob
from flows.rag.config import RagOptions, load_config
from flows.rag.embed import get_embedder
from flows.rag.parser_pool import get_parser_pool
from flows.rag.pipeline import BatchIndexer, refreshable_fields
from flows.rag.resources import RagResources, open_resources
from flows.rag.source_spec import SourceSpec
from flows.rag.sources.base import DocumentRef, Source

EMPTY_SUMMARY = {"files": 0, "indexed": 0, "skipped": 0, "failed": 0, "chunks": 0, "split_chunks": 0} | {
    "seconds": {"embed": 0.0, "write": 0.0, "total": 0.0}
}


@task(task_run_name="apply-removals-and-renames", cache_policy=NO_CACHE)
def apply_removals_and_renames(
    resources: RagResources, src: Source, removed: tuple[str, ...], refreshed: tuple[DocumentRef, ...]
) -> None:
    """Changes that need no parsing: delete removed documents' points, refresh the payloads of those renamed or
    shared otherwise (in the served collection too, during a model migration), and record both in the ledger."""
    for store in (resources.store, resources.served_store()):
        if store is None:
            continue
        if removed:
            store.delete_documents(src.source_id, list(removed))
        for ref in refreshed:
            store.set_document_metadata(src.source_id, ref.doc_id, refreshable_fields(ref))
    if removed:
        resources.ledger.mark_deleted(src.source_id, list(removed))
    if refreshed:
        resources.ledger.refresh_metadata(src.source_id, list(refreshed))


@task(task_run_name="index-{batch_label}", cache_policy=NO_CACHE)
def index_documents(
    resources: RagResources, src: Source, documents: tuple[DocumentRef, ...], batch_label: str
) -> dict[str, Any]:
    config = resources.config
    with gpu_section(config.gpu_slot):
        indexer = BatchIndexer(
            source=src,
            store=resources.store,
            ledger=resources.ledger,
            load_embedder=partial(get_embedder, config.embedding_model, config.device, config.embed_precision),
            parsers=get_parser_pool(config.parse_workers, config.parse_memory_mb),
            config=config,
            served=resources.served_store(),
        )
        return indexer.run(list(documents)).summary()


@task(task_run_name="publish-alias", cache_policy=NO_CACHE)
def publish_alias(resources: RagResources) -> None:
    publish_if_complete(resources)


def run_batch(resources: RagResources, source: SourceSpec, job: BatchJob, publish: bool = True) -> dict[str, Any]:
    """The one batch step, in rag-sync's own run or in an ingest-batch run: the job's removals and renames, its
    documents indexed, then (``publish``) the alias swapped if the model change is complete. The summary counts
    this batch's documents and seconds."""
    src = resources.source(source)
    if job.removed or job.refreshed:
        apply_removals_and_renames(resources, src, job.removed, job.refreshed)
    summary = index_documents(resources, src, job.documents, job.label) if job.documents else EMPTY_SUMMARY
    if publish:
        publish_alias(resources)
    return summary


@flow(name="ingest-batch")
def ingest_batch(
    source: SourceSpec,
    documents: list[DocumentRef],
    config: RagOptions | None = None,
    batch_label: str = "batch",
    removed: list[str] | None = None,
    refreshed: list[DocumentRef] | None = None,
    publish: bool = False,
) -> dict[str, Any]:
    """Index ``documents`` of ``source`` (one batch of a rag-sync run on another node).

    Args:
        source: Where the documents are: a Google Drive scope (a local folder is read by rag-sync's own node).
        documents: References of the documents to index (ids, versions, paths; never their content).
        config: Settings the sync was given; an empty field is this node's own (SWARM_<FIELD>), else the default.
        batch_label: Name of the batch in the run's task names and logs (0001, 0002, ...).
        removed: Ids of documents gone from the source: their points are deleted.
        refreshed: Documents renamed or moved without a new version: their payloads are refreshed.
        publish: After indexing, swap the collection alias if no document is left on the previous model.
    """
    resources = open_resources(load_config(config))
    job = BatchJob(batch_label, tuple(documents), tuple(removed or ()), tuple(refreshed or ()))
    return run_batch(resources, source, job, publish)
