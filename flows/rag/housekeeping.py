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
    left to re-embed, then drop the old collection: readers switch atomically and never see a gap."""
    store = services.store
    previous = store.alias_target()
    if previous != store.collection and not services.ledger.documents_not_on(services.config.embedding_model):
        store.publish()
        if previous and store.client.collection_exists(previous):
            store.client.delete_collection(previous)
