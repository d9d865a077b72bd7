"""Carry points into a new Edge shard without re-embedding: every point is read with its vector and payload and
written, with the BM25 vector of its text that hybrid search needs (flows/rag/sparse.py), to a shard built under a
temporary name and renamed into place once complete (``EdgeFolder.install``). Two callers:

- the old embedded store (qdrant-client's local mode: meta.json, collection/<name>/storage.sqlite), carried over
  to Qdrant Edge in the same folder on first open: a shard per collection, then the aliases; the old files are
  moved aside last (into ``local-mode-carried-over/``, for the user to delete);
- a shard made before hybrid search (dense vectors only), rebuilt with text vectors before the first write to it
  (``VectorStore.upsert``); readers meanwhile search it by vector alone.

Safe to interrupt: a build stopped midway leaves the previous shard (or none), never a half-made one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import qdrant_edge as qe

from flows.rag.sparse import encode_document
from flows.rag.store import dense_vector

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


Record = tuple[Any, Sequence[float], dict[str, Any]]  # a point's id, dense vector and payload


def copy_points(pages: Iterable[Sequence[Record]], path: Path, dim: int) -> int:
    """A new shard at ``path`` holding the points of ``pages``, each with the BM25 vector of its text; indexed
    and closed. Returns how many points it holds."""
    from flows.rag.store_edge import edge_point, new_shard

    shard = new_shard(path, dim, sparse=True)
    copied = 0
    try:
        for page in pages:
            points = [edge_point(i, v, encode_document(str(p.get("text", ""))), p) for i, v, p in page]
            if points:
                shard.update(qe.UpdateOperation.upsert_points(points))
            copied += len(points)
        shard.optimize()
    finally:
        shard.close()
    return copied


def _copy(client: QdrantClient, name: str, path: Path) -> None:
    vectors = client.get_collection(name).config.params.vectors
    size = getattr(vectors, "size", None)
    if size is None:  # the project only ever made one unnamed dense vector per collection
        raise ValueError(f"collection {name} of the old embedded store has named vectors; re-index it instead")
    scroll = partial(client.scroll, name, limit=PAGE, with_payload=True, with_vectors=True)
    copied = copy_points(_pages(lambda offset: scroll(offset=offset)), path, size)
    log.warning("carried over %s: %d points", name, copied)


def add_text_vectors(folder: EdgeFolder, name: str, dim: int) -> None:
    """Rebuild shard ``name``, made before hybrid search, with a BM25 vector per point from its stored text."""
    log.warning("adding text vectors to %s for hybrid search (once; no re-embedding)", name)

    def scroll(offset: Any) -> tuple[list[Any], Any]:
        return folder.shard(name).scroll(
            qe.ScrollRequest(offset=offset, limit=PAGE, with_payload=True, with_vector=True)
        )

    copied = folder.install(name, lambda path: copy_points(_pages(scroll), path, dim))
    log.warning("added text vectors to %s: %d points", name, copied)


def _pages(scroll: Callable[[Any], tuple[list[Any], Any]]) -> Iterator[list[Record]]:
    """Every point of a store, a page at a time, through ``scroll(offset) -> (records, next offset or None)``."""
    offset = None
    while True:
        records, offset = scroll(offset)
        yield [(r.id, dense_vector(r.vector), r.payload or {}) for r in records]
        if offset is None:
            return
