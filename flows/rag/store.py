"""The vector store: one collection per embedding model, read through an alias, on one of two engines.

- A Qdrant server by URL and API key (production): flows/rag/store_server.py, through qdrant-client.
- Embedded (the default): Qdrant Edge in this process, flows/rag/store_edge.py: a shard directory per model
  and the alias recorded in a file.

Both take the same calls from the flows; filters come in a neutral form that each engine translates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.common.errors import SwarmError
from flows.rag.ids import collection_name
from flows.rag.upsert_batches import DEFAULT_BUDGET_BYTES, byte_batches, point_bytes

# For each (payload field, values): the field must match one of the values (a list-valued field: any element).
Must = Sequence[tuple[str, list[str]]]

# Payload fields that filters use, and their kind; both engines index them.
INDEXED_FIELDS: dict[str, str] = {
    "source_id": "keyword",
    "doc_id": "keyword",
    "version": "keyword",
    "mime_type": "keyword",
    "path": "keyword",
    "page": "integer",
    "readers": "keyword",  # search --as (flows/rag/readers.py)
}


class UpsertError(SwarmError):
    """The store refused a write for good (a 400: bad vector size, payload...), or stayed unreachable."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    payload: dict[str, Any]


class VectorStore(ABC):
    """This model's collection (``collection``), and the alias readers query (``alias``)."""

    def __init__(self, alias: str, model: str, dim: int, *, request_budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.alias = alias
        self.model = model
        self.dim = dim
        self.collection = collection_name(alias, model, dim)
        self.request_budget_bytes = request_budget_bytes

    @abstractmethod
    def ensure_collection(self) -> None:
        """Create this model's collection and its payload indexes; the first one also gets the alias."""

    @abstractmethod
    def alias_target(self) -> str | None:
        """The collection the alias serves, None before the first publish."""

    @abstractmethod
    def publish(self) -> None:
        """Point the alias at this collection in one atomic step (readers never see a gap)."""

    @abstractmethod
    def collections(self) -> list[str]:
        """Every collection's name, sorted."""

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Delete collection ``name`` and its points; nothing when it does not exist."""

    def upsert(self, ids: Sequence[str], vectors: Any, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points in requests below the byte budget, whatever the document's size; upserts by id are
        idempotent, so a request retried after a lost answer writes each point once."""
        if len(ids) != len(payloads) or len(ids) != len(vectors):
            raise ValueError(f"upsert got {len(ids)} ids, {len(vectors)} vectors and {len(payloads)} payloads")
        sizes = [point_bytes(self.dim, payload) for payload in payloads]
        for batch in byte_batches(sizes, self.request_budget_bytes):
            self._write([ids[i] for i in batch], [vectors[i].tolist() for i in batch], [payloads[i] for i in batch])

    @abstractmethod
    def _write(self, ids: list[str], vectors: list[list[float]], payloads: list[dict[str, Any]]) -> None:
        """One request's points, already within the byte budget."""

    @abstractmethod
    def delete_stale(self, source_id: str, versions: Mapping[str, str]) -> None:
        """Drop each document's points of any version but the given one (after its new points are written),
        in one delete for all of them."""

    @abstractmethod
    def delete_documents(self, source_id: str, doc_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def set_document_metadata(self, source_id: str, doc_id: str, metadata: dict[str, Any]) -> None: ...

    @abstractmethod
    def count(self, source_id: str | None = None) -> int: ...

    @abstractmethod
    def points(self, fields: Sequence[str] | None = None, page: int = 1024) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every point's id and payload (only ``fields`` of it; all of it when None), no vectors, a page at a time."""

    @abstractmethod
    def document_points(self, source_id: str, doc_id: str) -> list[tuple[dict[str, Any], list[float]]]:
        """One document's points as (payload, vector): what a copy of it with the same content reuses
        (flows/rag/duplicates.py)."""

    def payloads(self, fields: Sequence[str], page: int = 1024) -> Iterator[dict[str, Any]]:
        """Every point's payload, only ``fields`` of it."""
        return (payload for _, payload in self.points(fields, page))

    @abstractmethod
    def search(self, vector: Sequence[float], limit: int, must: Must = ()) -> list[Hit]:
        """The ``limit`` points of the served collection (the alias) closest to ``vector`` among those that
        match ``must``."""

    @abstractmethod
    def optimize(self) -> None:
        """Index what was written since the last call (a bulk write ends here); a server does it by itself."""


def open_vector_store(
    url: str | None, api_key: str | None, path: Path, alias: str, model: str, dim: int
) -> VectorStore:
    """The server's store when ``url`` is set, else the embedded one under ``path``; its collection ensured."""
    store: VectorStore
    if url:
        from flows.rag.store_server import ServerStore, open_qdrant

        store = ServerStore(open_qdrant(url, api_key), alias, model, dim)
    else:
        from flows.rag.store_edge import EdgeStore, open_edge

        store = EdgeStore(open_edge(path), alias, model, dim)
    store.ensure_collection()
    return store
