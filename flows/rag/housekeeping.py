"""Sync changes that need no parsing, shared by rag-sync (in-process) and ingest-batch (dispatched)."""

from __future__ import annotations

from collections.abc import Sequence

from flows.rag.services import RagServices
from flows.rag.sources.base import DocumentRef


def apply_removals_and_renames(
    services: RagServices, source_id: str, removed: Sequence[str], refreshed: Sequence[DocumentRef]
) -> None:
    """Delete removed documents' points, refresh renamed ones' payloads, and record both in the ledger."""
    if removed:
        services.store.delete_documents(source_id, list(removed))
        services.ledger.mark_deleted(source_id, list(removed))
    for ref in refreshed:
        services.store.set_document_metadata(
            source_id, ref.doc_id, {"title": ref.name, "path": ref.path, "modified": ref.modified}
        )
    if refreshed:
        services.ledger.refresh_metadata(source_id, list(refreshed))


def publish_if_complete(services: RagServices) -> None:
    """After a model change, swap the alias to the new collection once no document of any source is
    left to re-embed, then drop the old collection: readers switch atomically and never see a gap.
    The ledger records the model the alias serves, so that ``publish_pending`` can answer without the store, and
    so ends a pending migration to that model (``choose_model``)."""
    store = services.store
    model = services.config.embedding_model
    previous = store.alias_target()
    if previous != store.collection:
        if services.ledger.documents_not_on(model):
            return  # readers stay on the previous collection until every document is re-embedded
        store.publish()
        if previous and store.client.collection_exists(previous):
            store.client.delete_collection(previous)
    services.ledger.record_published_model(store.alias, model)


def publish_pending(services: RagServices) -> bool:
    """Whether ``publish_if_complete`` has work, from the ledger alone: a sync with nothing to ingest asks this
    instead of opening the store (embedded Qdrant reads every point when it opens), and a dispatching node
    needs no model files. True when nothing was recorded yet, so that sync checks the store once."""
    ledger, model = services.ledger, services.config.embedding_model
    return ledger.published_model(services.config.collection) != model and not ledger.documents_not_on(model)
