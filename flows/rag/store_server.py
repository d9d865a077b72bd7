"""The vector store on a Qdrant server, through qdrant-client: collections, a server-side alias, writes retried."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from flows.common.errors import ServiceUnavailable
from flows.common.process_cache import ProcessCache
from flows.common.retry import RetryPolicy
from flows.rag.sparse import Sparse
from flows.rag.store import (
    INDEXED_FIELDS,
    SPARSE_VECTOR,
    Hit,
    Must,
    UpsertError,
    VectorStore,
    dense_vector,
)
from flows.rag.upsert_batches import DEFAULT_BUDGET_BYTES

log = logging.getLogger(__name__)

# Server answers worth another try: rate limit, and a proxy or server that is briefly down or overloaded.
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})

_SCHEMAS = {"keyword": models.PayloadSchemaType.KEYWORD, "integer": models.PayloadSchemaType.INTEGER}

# A new collection's settings, for a corpus (60 TB of documents) whose vectors outgrow the server's RAM. Chosen from
# Qdrant's documentation on memory and quantization, not measured here (no server on this machine).
# The full-precision vectors and the payload live on disk (memory-mapped), read only to rescore or to return.
VECTORS_ON_DISK = True
PAYLOAD_ON_DISK = True
# int8 scalar quantization keeps a quarter-size copy of each vector in RAM, which the HNSW search walks...
QUANTIZATION = models.ScalarQuantization(
    scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
)
# ...then the best 2x ``limit`` candidates are rescored with the on-disk vectors, winning back int8's lost precision.
SEARCH_PARAMS = models.SearchParams(quantization=models.QuantizationSearchParams(rescore=True, oversampling=2.0))
# Qdrant's default graph degree and build effort (recall vs. build time and RAM); the graph itself stays in RAM, as
# every search walks it.
HNSW = models.HnswConfigDiff(m=16, ef_construct=100, on_disk=False)
# The BM25 vector: the server weighs each term by its inverse document frequency over the collection (IDF modifier);
# its inverted index is on disk like the dense vectors.
SPARSE_PARAMS = models.SparseVectorParams(modifier=models.Modifier.IDF, index=models.SparseIndexParams(on_disk=True))

_clients: ProcessCache[str, QdrantClient] = ProcessCache(QdrantClient.close)


def open_qdrant(url: str, api_key: str | None) -> QdrantClient:
    """One client per server and process, checked by listing the collections."""
    return _clients.get_or_open(url, lambda: _connect(url, api_key))


def _connect(url: str, api_key: str | None) -> QdrantClient:
    try:
        client = QdrantClient(url=url, api_key=api_key, timeout=30)
        client.get_collections()
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ServiceUnavailable(f"cannot reach Qdrant at {url}: {reason}") from exc
    return client


def _match(must: Must) -> list[models.FieldCondition]:
    return [models.FieldCondition(key=field, match=models.MatchAny(any=list(values))) for field, values in must]


def _filter(must: Must) -> models.Filter | None:
    return models.Filter(must=_match(must)) if must else None


def _doc_filter(source_id: str, doc_ids: Sequence[str]) -> models.Filter:
    return models.Filter(must=_match([("source_id", [source_id]), ("doc_id", list(doc_ids))]))


def _sparse(words: Sparse) -> models.SparseVector:
    return models.SparseVector(indices=list(words.indices), values=list(words.values))


def _hits(found: models.QueryResponse) -> list[Hit]:
    return [Hit(str(p.id), p.score, p.payload or {}) for p in found.points]


def _is_transient(exc: Exception) -> bool:
    # ResponseHandlingException wraps the transport's errors: connection reset or refused, timeouts.
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in TRANSIENT_STATUS
    return isinstance(exc, ResponseHandlingException | ConnectionError | TimeoutError)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, UnexpectedResponse):
        detail = " ".join(exc.content.decode("utf-8", "replace").split())[:200]
        return f"HTTP {exc.status_code} {exc.reason_phrase}: {detail}"
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class ServerStore(VectorStore):
    def __init__(
        self,
        client: QdrantClient,
        alias: str,
        model: str,
        dim: int,
        *,
        request_budget_bytes: int = DEFAULT_BUDGET_BYTES,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(alias, model, dim, request_budget_bytes=request_budget_bytes)
        self.client = client
        self.retry = retry or RetryPolicy(max_attempts=6, base_s=0.5, cap_s=8.0)

    def ensure_collection(self) -> None:
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(
                    size=self.dim, distance=models.Distance.COSINE, on_disk=VECTORS_ON_DISK
                ),
                sparse_vectors_config={SPARSE_VECTOR: SPARSE_PARAMS},
                on_disk_payload=PAYLOAD_ON_DISK,
                quantization_config=QUANTIZATION,
                hnsw_config=HNSW,
            )
            for field, kind in INDEXED_FIELDS.items():
                self.client.create_payload_index(self.collection, field, field_schema=_SCHEMAS[kind])
        if self.alias_target() is None:
            self.publish()

    def alias_target(self) -> str | None:
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        return None

    def publish(self) -> None:
        operations: list[Any] = []
        if self.alias_target() is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)))
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=self.collection, alias_name=self.alias)
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=operations)

    def collections(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def drop_collection(self, name: str) -> None:
        self._with_sparse.pop(name, None)
        if self.client.collection_exists(name):
            self.client.delete_collection(name)

    def _has_sparse(self, name: str) -> bool:
        return SPARSE_VECTOR in (self.client.get_collection(name).config.params.sparse_vectors or {})

    def _write(
        self,
        ids: list[str],
        vectors: list[list[float]],
        sparse: list[Sparse] | None,
        payloads: list[dict[str, Any]],
        request_bytes: int,
    ) -> None:
        points = [
            models.PointStruct(
                id=i, vector=v if sparse is None else {"": v, SPARSE_VECTOR: _sparse(sparse[n])}, payload=p
            )
            for n, (i, v, p) in enumerate(zip(ids, vectors, payloads, strict=True))
        ]
        attempts = self.retry.max_attempts
        for attempt in range(attempts):
            try:
                self.client.upsert(self.collection, points=points, wait=True)
                return
            except Exception as exc:
                if not _is_transient(exc):
                    raise UpsertError(
                        f"Qdrant refused {len(points)} points for {self.collection}: {_one_line(exc)}"
                    ) from exc
                if attempt + 1 == attempts:
                    raise UpsertError(
                        f"Qdrant write to {self.collection} failed {attempts} times: {_one_line(exc)}"
                    ) from exc
                wait = self.retry.delay(attempt)
                log.warning("Qdrant write failed (%s); retrying in %.1f s", _one_line(exc), wait)
                self.retry.sleep(wait)

    def delete_stale(self, source_id: str, versions: Mapping[str, str]) -> None:
        if not versions:
            return
        per_document = [
            models.Filter(
                must=_match([("doc_id", [doc_id])]),
                must_not=_match([("version", [version])]),
            )
            for doc_id, version in versions.items()
        ]
        selector = _doc_filter(source_id, list(versions))
        selector.should = per_document
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def delete_documents(self, source_id: str, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            selector = models.FilterSelector(filter=_doc_filter(source_id, doc_ids))
            self.client.delete(self.collection, points_selector=selector, wait=True)

    def set_document_metadata(self, source_id: str, doc_id: str, metadata: dict[str, Any]) -> None:
        self.client.set_payload(self.collection, payload=metadata, points=_doc_filter(source_id, [doc_id]))

    def count(self, source_id: str | None = None) -> int:
        flt = models.Filter(must=_match([("source_id", [source_id])])) if source_id else None
        return self.client.count(self.collection, count_filter=flt, exact=True).count

    def points(self, fields: Sequence[str] | None = None, page: int = 1024) -> Iterator[tuple[str, dict[str, Any]]]:
        offset = None
        with_payload: bool | list[str] = True if fields is None else list(fields)
        while True:
            records, offset = self.client.scroll(
                self.collection, limit=page, offset=offset, with_payload=with_payload, with_vectors=False
            )
            for record in records:
                yield str(record.id), record.payload or {}
            if offset is None:
                return

    def document_points(self, source_id: str, doc_id: str) -> list[tuple[dict[str, Any], list[float]]]:
        found: list[tuple[dict[str, Any], list[float]]] = []
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                scroll_filter=_doc_filter(source_id, [doc_id]),
                limit=1024,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            found += [(record.payload or {}, dense_vector(record.vector)) for record in records]
            if offset is None:
                return found

    def _search_dense(self, vector: Sequence[float], limit: int, must: Must) -> list[Hit]:
        found = self.client.query_points(
            self.alias,
            query=list(vector),
            limit=limit,
            query_filter=_filter(must),
            search_params=SEARCH_PARAMS,
            with_payload=True,
        )
        return _hits(found)

    def _search_hybrid(
        self, served: str, vector: Sequence[float], words: Sparse, candidates: int, must: Must
    ) -> list[Hit]:
        flt = _filter(must)
        found = self.client.query_points(
            served,
            prefetch=[
                models.Prefetch(query=list(vector), filter=flt, limit=candidates, params=SEARCH_PARAMS),
                models.Prefetch(query=_sparse(words), using=SPARSE_VECTOR, filter=flt, limit=candidates),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),  # the server's RRF constant is RRF_K's 60
            limit=2 * candidates,
            with_payload=True,
        )
        return _hits(found)

    def optimize(self) -> None:
        """The server optimizes its segments in the background."""
