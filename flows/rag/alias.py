"""The collection alias readers query: swapped to a new model's collection once every document is on it."""

from __future__ import annotations

from flows.rag.resources import RagResources


def publish_if_complete(resources: RagResources) -> None:
    """After a model change, swap the alias to the new collection once no document of any source is
    left to re-embed, then drop the old collection: readers switch atomically and never see a gap.
    The ledger records the model the alias serves, so that ``publish_pending`` can answer without the store, and
    so ends a pending migration to that model (``choose_model``)."""
    store = resources.store
    model = resources.config.embedding_model
    store.optimize()  # the end of a batch's bulk write: index it before readers are pointed at it
    previous = store.alias_target()
    if previous != store.collection:
        if resources.ledger.documents_not_on(model):
            return  # readers stay on the previous collection until every document is re-embedded
        store.publish()
        if previous:
            store.drop_collection(previous)
    resources.ledger.record_published_model(store.alias, model)


def publish_pending(resources: RagResources) -> bool:
    """Whether ``publish_if_complete`` has work, from the ledger alone: a sync with nothing to ingest asks this
    instead of opening the store, and a dispatching node needs no model files. True when nothing was recorded yet,
    so that sync checks the store once."""
    ledger, model = resources.ledger, resources.config.embedding_model
    return ledger.published_model(resources.collection) != model and not ledger.documents_not_on(model)
