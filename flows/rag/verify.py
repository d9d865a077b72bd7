"""rag-verify: compare the ledger with the vector store, document by document, and repair on request.

Pool: thanos (deployment ``rag-verify/thanos``), where the store can be opened (embedded Qdrant admits one process).
Run it after every Qdrant restore, or whenever the store may not be the one the ledger describes.
Reads the ledger and every point's source_id/doc_id/version; writes nothing unless ``repair``: then documents missing
from the store, or held with another count or version, are marked for re-ingest (the normal sync path re-indexes
them: at once when ``source`` is given, else at that source's next sync) and points the ledger does not know are
deleted. Safe to re-run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.rag.config import RagOptions, load_config
from flows.rag.drift import REINGEST_KINDS, Drift, find_drift, tally_points
from flows.rag.resources import RagResources, open_resources
from flows.rag.source_spec import SourceSpec
from flows.rag.sync import decide_model, rag_sync

_POINT_FIELDS = ("source_id", "doc_id", "version")


@task(task_run_name="compare-ledger-and-store", cache_policy=NO_CACHE)
def compare(resources: RagResources, source_id: str | None) -> tuple[list[Drift], int, int]:
    """The drift, the number of ledger documents checked and of points read."""
    store = resources.store
    documents = resources.ledger.documents(source_id)
    stored = tally_points(store.payloads(_POINT_FIELDS))
    if source_id:
        stored = {key: versions for key, versions in stored.items() if key[0] == source_id}
    points = sum(sum(versions.values()) for versions in stored.values())
    return find_drift(documents, stored, store.collection), len(documents), points


@task(task_run_name="repair-drift", cache_policy=NO_CACHE)
def repair_drift(resources: RagResources, drift: list[Drift]) -> dict[str, int]:
    """Mark what the store lacks for re-ingest and delete what the ledger does not know."""
    reingest: dict[str, list[str]] = defaultdict(list)
    stray: dict[str, list[str]] = defaultdict(list)
    for item in drift:
        (reingest if item.kind in REINGEST_KINDS else stray)[item.source_id].append(item.doc_id)
    for source_id, doc_ids in reingest.items():
        resources.ledger.mark_for_reingest(source_id, doc_ids)
        resources.ledger.set_cursor(source_id, None)  # an incremental source (Drive) lists everything next time
    for source_id, doc_ids in stray.items():
        resources.store.delete_documents(source_id, doc_ids)
    return {
        "marked_for_reingest": sum(map(len, reingest.values())),
        "stray_documents_deleted": sum(map(len, stray.values())),
    }


@flow(name="rag-verify")
def rag_verify(
    config: RagOptions | None = None, source: SourceSpec | None = None, repair: bool = False
) -> dict[str, Any]:
    """Check every document of the ledger (or of ``source`` only) against the store's points, list the drift in the
    ``rag-verify-report`` artifact and, with ``repair``, fix it; with ``source`` too, re-index it now (rag-sync).

    Args:
        config: Settings of this run; an empty field is the node's own (SWARM_<FIELD>), else the default.
        source: Only this source's documents (and, with repair, re-index it at once); empty: every source.
        repair: Mark what the store lacks for re-ingest and delete the points the ledger does not know.
    """
    config = load_config(config)
    resources = open_resources(config)
    warning = decide_model(resources)  # the collection a sync would write
    if warning:
        get_run_logger().warning(warning)
    source_id = resources.source(source).source_id if source else None
    drift, documents, points = compare(resources, source_id)
    result: dict[str, Any] = {
        "collection": resources.store.collection,
        "documents": documents,
        "points": points,
        "drift": [item.row() for item in drift],
    }
    summary = f"{len(drift)} drifted of {documents} ledger documents, {points} points in {result['collection']}"
    create_table_artifact(result["drift"], key="rag-verify-report", description=summary)
    if repair and drift:
        result["repaired"] = repair_drift(resources, drift)
        if source is not None:
            result["sync"] = rag_sync(source, config.overrides())
    return result
