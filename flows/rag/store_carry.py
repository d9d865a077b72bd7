"""Carry the old embedded store (qdrant-client's local mode: meta.json, collection/<name>/storage.sqlite) over to
Qdrant Edge in the same folder, without re-embedding: every point is read with its vector and payload and
written to a shard of the same name, then the aliases are copied.

Safe to interrupt: each shard is renamed into place only once complete, the aliases are written after every
shard, and the old files are moved aside last (into ``local-mode-carried-over/``, for the user to delete).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import qdrant_edge as qe

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

    from flows.rag.store_edge import EdgeFolder

log = logging.getLogger(__name__)

OLD_FILES = ("meta.json", "collection", ".lock")
CARRIED = "local-mode-carried-over"
PAGE = 1024


def is_local_mode(root: Path) -> bool:
    return (root / "meta.json").is_file() and (root / "collection").is_dir()


def carry_over(folder: EdgeFolder) -> None:
    from qdrant_client import QdrantClient

    root = folder.root
    log.warning("carrying the embedded store at %s over to Qdrant Edge (once; no re-embedding)", root)
    client = QdrantClient(path=str(root))
    try:
        for collection in client.get_collections().collections:
            if not folder.has(collection.name):
                folder.install(collection.name, lambda path, name=collection.name: _copy(client, name, path))
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        folder.set_aliases(folder.aliases() | aliases)
    finally:
        client.close()
    aside = root / CARRIED
    aside.mkdir(exist_ok=True)
    for name in OLD_FILES:
        if (root / name).exists():
            os.replace(root / name, aside / name)
    log.warning("carried over; the old store's files are in %s: delete it once searches look right", aside)


def _copy(client: QdrantClient, name: str, path: Path) -> None:
    from flows.rag.store_edge import new_shard

    vectors = client.get_collection(name).config.params.vectors
    size = getattr(vectors, "size", None)
    if size is None:  # the project only ever made one unnamed dense vector per collection
        raise ValueError(f"collection {name} of the old embedded store has named vectors; re-index it instead")
    shard = new_shard(path, size)
    offset = None
    copied = 0
    while True:
        records, offset = client.scroll(name, limit=PAGE, offset=offset, with_payload=True, with_vectors=True)
        points = [qe.Point(id=r.id, vector=list(r.vector), payload=r.payload or {}) for r in records]  # type: ignore[arg-type]
        if points:
            shard.update(qe.UpdateOperation.upsert_points(points))
        copied += len(points)
        if offset is None:
            break
    shard.optimize()
    shard.close()
    log.warning("carried over %s: %d points", name, copied)
