"""ingest-batch: parse → embed → upsert → ledger for one batch of documents.

Pool: thanos (the GPU node) when rag-sync dispatches to it; otherwise called in-process by rag-sync.
Reads the source's files, writes Qdrant points and the ledger's document rows.
Safe to re-run: documents left pending by a crash are re-done, point ids are deterministic.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.rag.config import RagConfig, load_config
from flows.rag.embed import get_embedder
from flows.rag.parser_pool import get_parser_pool
from flows.rag.pipeline import BatchIndexer
from flows.rag.services import SourceSpec, open_services
from flows.rag.sources.base import DocumentRef


@task(task_run_name="index-{batch_label}", cache_policy=NO_CACHE)
def index_documents(
    source: SourceSpec, documents: list[DocumentRef], config: RagConfig, batch_label: str
) -> dict[str, Any]:
    services = open_services(config)
    embedder = get_embedder(config.embedding_model, config.device)
    indexer = BatchIndexer(
        source=services.source(source),
        store=services.store,
        ledger=services.ledger,
        embedder=embedder,
        parsers=get_parser_pool(config.parse_workers),
        config=config,
    )
    return indexer.run(documents).summary()


@flow(name="ingest-batch")
def ingest_batch(
    source: SourceSpec,
    documents: list[DocumentRef],
    config: dict[str, Any] | None = None,
    batch_label: str = "batch",
) -> dict[str, Any]:
    """Index ``documents`` of ``source``; ``config`` holds only overrides, the node's environment the rest."""
    settings = load_config(config)
    return index_documents(source, documents, settings, batch_label)
