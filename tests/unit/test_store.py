"""The vector store on an embedded Qdrant: stale-point cleanup, and writes bounded by bytes and retried."""

from __future__ import annotations

import json

import numpy as np
import pytest
from httpx import Headers
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from flows.common.retry import RetryPolicy
from flows.rag.ids import point_id
from flows.rag.store import UpsertError, VectorStore, open_qdrant
from flows.rag.upsert_batches import byte_batches, point_bytes


def _write(store: VectorStore, source: str, doc: str, version: str, chunks: int) -> None:
    ids = [point_id(source, doc, i) for i in range(chunks)]
    payloads = [{"source_id": source, "doc_id": doc, "version": version, "text": f"{doc} {i}"} for i in range(chunks)]
    store.upsert(ids, np.ones((chunks, 4), dtype=np.float32), payloads)


def test_delete_stale_keeps_each_documents_given_version_only(tmp_path) -> None:
    store = VectorStore(open_qdrant(None, None, tmp_path / "qdrant"), "documents", "test-model", 4)
    store.ensure_collection()
    for doc in ("a", "b", "c"):
        _write(store, "S", doc, "v1", 3)
    _write(store, "T", "a", "v1", 3)  # same document id in another source
    _write(store, "S", "a", "v2", 2)  # a's new version is shorter: its third v1 point is stale

    store.delete_stale("S", {"a": "v2", "b": "v1"})

    points, _ = store.client.scroll(store.collection, limit=100, with_payload=True)
    left = sorted((p.payload["source_id"], p.payload["doc_id"], p.payload["version"]) for p in points)
    assert left == sorted(
        [("S", "a", "v2")] * 2 + [("S", "b", "v1")] * 3 + [("S", "c", "v1")] * 3 + [("T", "a", "v1")] * 3
    )
    store.delete_stale("S", {})  # nothing to do: must not delete anything
    assert store.count() == len(left)


class _Wire:
    """Wraps the real client: records each upsert request's point count and JSON size, and fails the first
    ``failures`` upserts with ``error`` (raised before the call reaches the store, as a refused request)."""

    def __init__(self, client: QdrantClient, error: Exception | None = None, failures: int = 0) -> None:
        self._client = client
        self.error, self.failures = error, failures
        self.requests: list[tuple[int, int]] = []
        self.attempts = 0

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def upsert(self, collection_name: str, points, **kwargs):
        self.attempts += 1
        if self.error is not None and self.attempts <= self.failures:
            raise self.error
        body = json.dumps({"points": [p.model_dump(mode="json") for p in points]})
        self.requests.append((len(points), len(body.encode("utf-8"))))
        return self._client.upsert(collection_name, points=points, **kwargs)


def _store(tmp_path, wire_args: dict, **store_args) -> tuple[VectorStore, _Wire]:
    wire = _Wire(open_qdrant(None, None, tmp_path / "qdrant"), **wire_args)
    store = VectorStore(
        wire, "documents", "test-model", 384, retry=RetryPolicy(max_attempts=6, sleep=lambda _s: None), **store_args
    )
    store.ensure_collection()
    return store, wire


def _document(chunks: int) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(7)
    ids = [point_id("S", "big", i) for i in range(chunks)]
    payloads = [{"source_id": "S", "doc_id": "big", "version": "v1", "text": "é" * 250 + "x" * 250} for _ in ids]
    return ids, rng.standard_normal((chunks, 384)).astype(np.float32), payloads


def test_a_document_over_the_budget_goes_in_several_requests_each_under_it(tmp_path) -> None:
    budget = 200_000
    store, wire = _store(tmp_path, {}, request_budget_bytes=budget)
    ids, vectors, payloads = _document(120)  # ~1.1 MB as JSON

    store.upsert(ids, vectors, payloads)

    assert len(wire.requests) >= 5
    assert all(size <= budget for _, size in wire.requests), wire.requests
    assert sum(count for count, _ in wire.requests) == 120
    assert store.count() == 120


def test_a_transient_error_is_retried_and_the_points_land_once(tmp_path) -> None:
    error = UnexpectedResponse(503, "Service Unavailable", b"overloaded", Headers())
    store, wire = _store(tmp_path, {"error": error, "failures": 2})
    ids, vectors, payloads = _document(10)

    store.upsert(ids, vectors, payloads)

    assert wire.attempts == 3
    assert store.count() == 10


def test_a_connection_reset_is_retried(tmp_path) -> None:
    error = ResponseHandlingException(ConnectionResetError(104, "Connection reset by peer"))
    store, wire = _store(tmp_path, {"error": error, "failures": 1})
    store.upsert(*_document(3))
    assert (wire.attempts, store.count()) == (2, 3)


def test_a_bad_request_fails_at_once_with_one_line(tmp_path) -> None:
    body = b'{"status":{"error":"Wrong input: Vector dimension error: expected dim: 384, got 3"}}'
    error = UnexpectedResponse(400, "Bad Request", body, Headers())
    store, wire = _store(tmp_path, {"error": error, "failures": 99})

    with pytest.raises(UpsertError) as raised:
        store.upsert(*_document(3))

    assert wire.attempts == 1
    message = str(raised.value)
    assert "\n" not in message and "HTTP 400" in message and "Vector dimension error" in message
    assert store.count() == 0


def test_byte_batches_keep_order_and_send_an_oversized_point_alone() -> None:
    batches = [list(r) for r in byte_batches([40, 40, 40, 150, 10, 10], budget=100)]
    assert batches == [[0, 1], [2], [3], [4, 5]]
    assert list(byte_batches([], budget=100)) == []


def test_the_size_estimate_is_not_below_the_real_json() -> None:
    ids, vectors, payloads = _document(1)
    point = {"id": ids[0], "vector": vectors[0].tolist(), "payload": payloads[0]}
    assert point_bytes(384, payloads[0]) >= len(json.dumps(point, ensure_ascii=False).encode("utf-8"))
