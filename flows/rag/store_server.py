"""The vector store on a Qdrant server, through qdrant-client: collections, a server-side alias, writes retried."""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from flows.common.errors import ServiceUnavailable
from flows.common.retry import RetryPolicy
from flows.rag.store import INDEXED_FIELDS, Hit, Must, UpsertError, VectorStore
from flows.rag.upsert_batches import DEFAULT_BUDGET_BYTES

log = logging.getLogger(__name__)

# Server answers worth another try: rate limit, and a proxy or server that is briefly down or overloaded.
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})

_SCHEMAS = {"keyword": models.PayloadSchemaType.KEYWORD, "integer": models.PayloadSchemaType.INTEGER}

_clients: dict[str, QdrantClient] = {}
_clients_lock = threading.Lock()


@atexit.register
def _close_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def open_qdrant(url: str, api_key: str | None) -> QdrantClient:
    """One client per server and process, checked by listing the collections."""
    with _clients_lock:
        if url in _clients:
            return _clients[url]
        try:
            client = QdrantClient(url=url, api_key=api_key, timeout=30)
            client.get_collections()
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200]
            raise ServiceUnavailable(f"cannot reach Qdrant at {url}: {reason}") from exc
        _clients[url] = client
        return client


def _match(must: Must) -> list[models.FieldCondition]:
    return [models.FieldCondition(key=field, match=models.MatchAny(any=list(values))) for field, values in must]


def _doc_filter(source_id: str, doc_ids: Sequence[str]) -> models.Filter:
    return models.Filter(must=_match([("source_id", [source_id]), ("doc_id", list(doc_ids))]))


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
                vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
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
        if self.client.collection_exists(name):
            self.client.delete_collection(name)

    def _write(self, ids: list[str], vectors: list[list[float]], payloads: list[dict[str, Any]]) -> None:
        points = [models.PointStruct(id=i, vector=v, payload=p) for i, v, p in zip(ids, vectors, payloads, strict=True)]
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
            found += [(record.payload or {}, list(record.vector)) for record in records]  # type: ignore[arg-type]
            if offset is None:
                return found

    def search(self, vector: Sequence[float], limit: int, must: Must = ()) -> list[Hit]:
        flt = models.Filter(must=_match(must)) if must else None
        found = self.client.query_points(
            self.alias, query=list(vector), limit=limit, query_filter=flt, with_payload=True
        )
        return [Hit(str(p.id), p.score, p.payload or {}) for p in found.points]

    def optimize(self) -> None:
        """The server optimizes its segments in the background."""
