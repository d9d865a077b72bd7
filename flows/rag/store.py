"""The vector store: one Qdrant collection per embedding model, read through an alias.

Embedded (``QdrantClient(path=...)``) by default, a server by URL and API key in production.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from flows.common.errors import ServiceUnavailable, SwarmError
from flows.common.retry import RetryPolicy
from flows.rag.ids import collection_name
from flows.rag.upsert_batches import DEFAULT_BUDGET_BYTES, byte_batches, point_bytes

log = logging.getLogger(__name__)

# Server answers worth another try: rate limit, and a proxy or server that is briefly down or overloaded.
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})

# Payload fields that filters use get an index (a no-op in embedded mode, essential on a server).
_INDEXED_FIELDS = {
    "source_id": models.PayloadSchemaType.KEYWORD,
    "doc_id": models.PayloadSchemaType.KEYWORD,
    "version": models.PayloadSchemaType.KEYWORD,
    "mime_type": models.PayloadSchemaType.KEYWORD,
    "path": models.PayloadSchemaType.KEYWORD,
    "page": models.PayloadSchemaType.INTEGER,
}

_clients: dict[str, QdrantClient] = {}
_clients_lock = threading.Lock()


@atexit.register
def _close_clients() -> None:
    # Embedded storage is flushed and unlocked on close; closing during interpreter teardown fails.
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def open_qdrant(url: str | None, api_key: str | None, path: Path) -> QdrantClient:
    """One client per location and process: embedded storage allows a single client at a time."""
    key = url or f"path:{path.resolve()}"
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        try:
            if url:
                client = QdrantClient(url=url, api_key=api_key, timeout=30)
                client.get_collections()
            else:
                path.mkdir(parents=True, exist_ok=True)
                client = QdrantClient(path=str(path))
        except RuntimeError as exc:
            raise ServiceUnavailable(
                f"embedded Qdrant at {path} is in use by another process; wait for it to finish"
                " or use a Qdrant server (--qdrant-url)"
            ) from exc
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200]
            raise ServiceUnavailable(f"cannot reach Qdrant at {url}: {reason}") from exc
        _clients[key] = client
        return client


def _doc_filter(source_id: str, doc_ids: Sequence[str]) -> models.Filter:
    return models.Filter(
        must=[
            models.FieldCondition(key="source_id", match=models.MatchValue(value=source_id)),
            models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids))),
        ]
    )


class UpsertError(SwarmError):
    """Qdrant refused a write for good (a 400: bad vector size, payload...), or stayed unreachable."""


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


class VectorStore:
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
        self.client = client
        self.request_budget_bytes = request_budget_bytes
        self.retry = retry or RetryPolicy(max_attempts=6, base_s=0.5, cap_s=8.0)
        options = client.init_options
        self.embedded = options.get("path") is not None or options.get("location") == ":memory:"
        self.alias = alias
        self.dim = dim
        self.collection = collection_name(alias, model, dim)

    def ensure_collection(self) -> None:
        """Create this model's collection and its payload indexes; the first one also gets the alias."""
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
            )
            if not self.embedded:  # embedded Qdrant filters by scanning; it has no payload indexes
                for field, schema in _INDEXED_FIELDS.items():
                    self.client.create_payload_index(self.collection, field, field_schema=schema)
        if self.alias_target() is None:
            self.publish()
        if self.embedded:
            self._relax_embedded_fsync()

    def _relax_embedded_fsync(self) -> None:
        """qdrant-client's embedded storage commits every point to SQLite in rollback-journal mode: one fsync
        per point (~14 ms on this kind of disk). WAL with synchronous=NORMAL keeps each commit atomic and
        durable across a killed process (what the crash test checks); only a power cut can lose the last
        commits. Best effort: these are qdrant-client internals, so a missing attribute means "leave as is"."""
        collection = getattr(getattr(self.client, "_client", None), "collections", {}).get(self.collection)
        connection = getattr(getattr(collection, "storage", None), "storage", None)
        if connection is not None:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")

    def alias_target(self) -> str | None:
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name
        return None

    def publish(self) -> None:
        """Point the alias at this collection in one atomic operation (readers never see a gap)."""
        operations: list[Any] = []
        if self.alias_target() is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)))
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=self.collection, alias_name=self.alias)
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=operations)

    def upsert(self, ids: Sequence[str], vectors: Any, payloads: Sequence[dict[str, Any]]) -> None:
        """Write points in requests below the byte budget, whatever the document's size; upserts by id are
        idempotent, so a request retried after a lost answer writes each point once."""
        if len(ids) != len(payloads) or len(ids) != len(vectors):
            raise ValueError(f"upsert got {len(ids)} ids, {len(vectors)} vectors and {len(payloads)} payloads")
        sizes = [point_bytes(self.dim, payload) for payload in payloads]
        for batch in byte_batches(sizes, self.request_budget_bytes):
            points = [models.PointStruct(id=ids[i], vector=vectors[i].tolist(), payload=payloads[i]) for i in batch]
            self._upsert_with_retry(points)

    def _upsert_with_retry(self, points: list[models.PointStruct]) -> None:
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
        """Drop each document's points of any version but the given one (after its new points are written).

        One delete for all of them: embedded Qdrant evaluates a filter point by point, so a delete per
        document made a 300-file ingest rescan the whole collection 300 times (writes took 8% of its wall).
        """
        if not versions:
            return
        per_document = [
            models.Filter(
                must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))],
                must_not=[models.FieldCondition(key="version", match=models.MatchValue(value=version))],
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
        flt = None
        if source_id:
            flt = models.Filter(must=[models.FieldCondition(key="source_id", match=models.MatchValue(value=source_id))])
        return self.client.count(self.collection, count_filter=flt, exact=True).count

    def payloads(self, fields: Sequence[str], page: int = 1024) -> Iterator[dict[str, Any]]:
        """Every point's payload, only ``fields`` of it and no vectors, one page at a time."""
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, limit=page, offset=offset, with_payload=list(fields), with_vectors=False
            )
            for point in points:
                yield point.payload or {}
            if offset is None:
                return

    def search(self, vector: Sequence[float], limit: int) -> list[models.ScoredPoint]:
        return self.client.query_points(self.alias, query=list(vector), limit=limit, with_payload=True).points
