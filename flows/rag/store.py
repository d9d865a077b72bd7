"""The vector store: one collection per embedding model, read through an alias, on one of two engines.

- A Qdrant server by URL and API key (production): flows/rag/store_server.py, through qdrant-client.
- Embedded (the default): Qdrant Edge in this process, flows/rag/store_edge.py: a shard directory per model
  and the alias recorded in a file.

Both take the same calls from the flows; filters come in a neutral form that each engine translates. A point has
the chunk's dense vector (the collection's unnamed vector) and, in collections made since hybrid search, a sparse
BM25 vector of its text (flows/rag/sparse.py) named SPARSE_VECTOR, computed here on every write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from flows.common.errors import ConfigError, SwarmError
from flows.rag.ids import collection_name
from flows.rag.sparse import Sparse, encode_document, encode_query
from flows.rag.upsert_batches import DEFAULT_BUDGET_BYTES, FLOAT_JSON_BYTES, byte_batches, point_bytes, value_bytes

# For each (payload field, values): the field must match one of the values (a list-valued field: any element).
Must = Sequence[tuple[str, list[str]]]

# How a search ranks chunks: by the query's vector alone, or fused (reciprocal rank) with a BM25 match of its words.
SearchMode = Literal["dense", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
# The sparse vector's name. The dense vector stays the unnamed default one, as in every collection (and Edge shard,
# and carried-over local store) made before: those keep working, in dense mode, without re-embedding.
SPARSE_VECTOR = "bm25"
# Reciprocal-rank fusion's constant: each side's rank r adds 1/(RRF_K + r). 60 is the usual value and Qdrant
# server's default, which its Fusion.RRF uses; Edge's fusion takes it explicitly.
RRF_K = 60
# Each side of a hybrid search brings this many times ``limit`` candidates to the fusion (at least the floor), so a
# chunk ranked high on one side but outside the other's top ``limit`` still counts.
PREFETCH_FACTOR = 4
PREFETCH_FLOOR = 20

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


def prefetch_limit(limit: int) -> int:
    return max(limit * PREFETCH_FACTOR, PREFETCH_FLOOR)


def dense_vector(vector: Any) -> list[float]:
    """A stored point's dense vector, as either engine returns it: the whole vector in a collection without the
    sparse one, else the unnamed one beside it."""
    return list(vector[""] if isinstance(vector, dict) else vector)


_EMPTY_SPARSE_BYTES = value_bytes({"indices": [], "values": []})


def _sparse_bytes(sparse: Sparse) -> int:
    """JSON size of a sparse vector, numbers counted like payload numbers (an upper bound for both): what
    value_bytes gives for {"indices": [...], "values": [...]}, without walking the lists."""
    return _EMPTY_SPARSE_BYTES + 2 * (FLOAT_JSON_BYTES + 1) * len(sparse.indices)


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
        self._with_sparse: dict[str, bool] = {}  # per collection; set at creation, so never stale

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

    def has_sparse(self, name: str) -> bool:
        """Whether collection ``name`` has the sparse vector (collections made before hybrid search have not)."""
        if name not in self._with_sparse:
            self._with_sparse[name] = self._has_sparse(name)
        return self._with_sparse[name]

    @abstractmethod
    def _has_sparse(self, name: str) -> bool: ...

    def _add_text_vectors(self) -> bool:
        """Give this collection, made before hybrid search, the sparse vector; False where the engine keeps a
        collection as it was created (a server's: re-index into a new collection to change it)."""
        return False

    def upsert(self, ids: Sequence[str], vectors: Any, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points (``vectors``: a 2-D numpy array, a row per id) in requests below the byte budget, whatever
        the document's size; upserts by id are idempotent, so a request retried after a lost answer writes each
        point once. Each point's sparse vector comes from its payload's ``text``, where the collection has one (or
        gets one before its first write here: an embedded one made before hybrid search)."""
        if len(ids) != len(payloads) or len(ids) != len(vectors):
            raise ValueError(f"upsert got {len(ids)} ids, {len(vectors)} vectors and {len(payloads)} payloads")
        if not self.has_sparse(self.collection) and self._add_text_vectors():
            self._with_sparse.pop(self.collection, None)
        sparse = (
            [encode_document(str(p.get("text", ""))) for p in payloads] if self.has_sparse(self.collection) else None
        )
        sizes = [point_bytes(self.dim, payload) for payload in payloads]
        if sparse is not None:
            sizes = [size + _sparse_bytes(vector) for size, vector in zip(sizes, sparse, strict=True)]
        for batch in byte_batches(sizes, self.request_budget_bytes):
            self._write(
                [ids[i] for i in batch],
                vectors[batch.start : batch.stop].tolist(),  # one call per request, not one per row
                None if sparse is None else [sparse[i] for i in batch],
                [payloads[i] for i in batch],
                sum(sizes[i] for i in batch),
            )

    @abstractmethod
    def _write(
        self,
        ids: list[str],
        vectors: list[list[float]],
        sparse: list[Sparse] | None,
        payloads: list[dict[str, Any]],
        request_bytes: int,
    ) -> None:
        """One request's points, already within the byte budget (``request_bytes``: their estimated size);
        ``sparse`` None for a collection without it."""

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

    def serves_hybrid(self) -> bool:
        """Whether a hybrid search of the served collection can run (nothing served yet: it finds nothing)."""
        served = self.alias_target()
        return served is None or self.has_sparse(served)

    def search(
        self, vector: Sequence[float], limit: int, must: Must = (), *, text: str | None = None, mode: str = "dense"
    ) -> list[Hit]:
        """The ``limit`` points of the served collection (the alias) that best match the query among those that
        match ``must``: closest to ``vector`` ("dense"), or that and a BM25 match of ``text`` fused by reciprocal
        rank ("hybrid"; a collection made before hybrid search cannot: ConfigError)."""
        if mode not in SEARCH_MODES:
            raise ConfigError(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
        if mode == "dense":
            return self._search_dense(vector, limit, must)
        if text is None:
            raise ValueError("a hybrid search needs the query's text")
        served = self.alias_target()
        if served is None:
            return []
        if not self.has_sparse(served):
            raise ConfigError(
                f"collection {served} has no text vectors (made before hybrid search): search with search_mode"
                " dense, or re-index into a new collection, which a model change (config.embedding_model) makes"
                " with them (docs/store.md, 'Hybrid search')"
            )
        words = encode_query(text)
        if not words.indices:  # only stop-words: nothing for the text side to match
            return self._search_dense(vector, limit, must)
        fused = self._search_hybrid(served, vector, words, prefetch_limit(limit), must)
        # RRF gives the same score to chunks at mirrored ranks (each first on one side only, say), and the engines
        # order those ties differently from one process to the next: broken here, by id, over every candidate.
        return sorted(fused, key=lambda hit: (-hit.score, hit.id))[:limit]

    @abstractmethod
    def _search_dense(self, vector: Sequence[float], limit: int, must: Must) -> list[Hit]: ...

    @abstractmethod
    def _search_hybrid(
        self, served: str, vector: Sequence[float], words: Sparse, candidates: int, must: Must
    ) -> list[Hit]:
        """Collection ``served``: a dense and a sparse prefetch of ``candidates`` each, both filtered by ``must``,
        fused by RRF (RRF_K); every fused point (up to 2 x ``candidates``)."""

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
