"""The vector store's one interface on both engines (the server's through qdrant-client, here against its
in-memory mode; Qdrant Edge on disk): stale-point cleanup, filters, the alias; and the server engine's writes
bounded by bytes and retried."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from httpx import Headers
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from flows.common.retry import RetryPolicy
from flows.rag.ids import point_id
from flows.rag.store import UpsertError, VectorStore
from flows.rag.store_edge import EdgeStore, close_edge, open_edge
from flows.rag.store_server import ServerStore
from flows.rag.upsert_batches import byte_batches, point_bytes


@pytest.fixture(params=["server", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    made: VectorStore
    if request.param == "server":
        made = ServerStore(QdrantClient(location=":memory:"), "documents", "test-model", 4)
    else:
        made = EdgeStore(open_edge(tmp_path / "qdrant"), "documents", "test-model", 4)
    made.ensure_collection()
    yield made
    close_edge(tmp_path / "qdrant")


def _write(store: VectorStore, source: str, doc: str, version: str, chunks: int, **extra: object) -> None:
    ids = [point_id(source, doc, i) for i in range(chunks)]
    payloads = [
        {"source_id": source, "doc_id": doc, "version": version, "text": f"{doc} {i}", **extra} for i in range(chunks)
    ]
    store.upsert(ids, np.ones((chunks, 4), dtype=np.float32), payloads)


def _left(store: VectorStore) -> list[tuple[str, str, str]]:
    return sorted(
        (p["source_id"], p["doc_id"], p["version"]) for p in store.payloads(["source_id", "doc_id", "version"])
    )


def test_delete_stale_keeps_each_documents_given_version_only(store: VectorStore) -> None:
    for doc in ("a", "b", "c"):
        _write(store, "S", doc, "v1", 3)
    _write(store, "T", "a", "v1", 3)  # same document id in another source
    _write(store, "S", "a", "v2", 2)  # a's new version is shorter: its third v1 point is stale

    store.delete_stale("S", {"a": "v2", "b": "v1"})

    left = _left(store)
    assert left == sorted(
        [("S", "a", "v2")] * 2 + [("S", "b", "v1")] * 3 + [("S", "c", "v1")] * 3 + [("T", "a", "v1")] * 3
    )
    store.delete_stale("S", {})  # nothing to do: must not delete anything
    assert store.count() == len(left) and store.count("T") == 3


def test_documents_are_deleted_and_relabelled_by_source_and_id(store: VectorStore) -> None:
    for doc in ("a", "b"):
        _write(store, "S", doc, "v1", 2)
    _write(store, "T", "a", "v1", 1)

    store.delete_documents("S", ["a"])
    store.set_document_metadata("S", "b", {"title": "B", "path": "new/b.md"})

    assert _left(store) == [("S", "b", "v1")] * 2 + [("T", "a", "v1")]
    titled = {(p["doc_id"], p.get("title")) for p in store.payloads(["doc_id", "title"])}
    assert titled == {("b", "B"), ("a", None)}
    ids = {point for point, _ in store.points()}
    assert ids == {point_id("S", "b", 0), point_id("S", "b", 1), point_id("T", "a", 0)}


def test_search_with_must_matches_any_value_and_any_element_of_a_list(store: VectorStore) -> None:
    _write(store, "S", "open", "v1", 1, readers=["*"])
    _write(store, "S", "team", "v1", 1, readers=["ann", "bob"])
    _write(store, "T", "mine", "v1", 1, readers=["cy"])

    def found(*must: tuple[str, list[str]]) -> set[str]:
        return {hit.payload["doc_id"] for hit in store.search([1.0, 1.0, 1.0, 1.0], 10, must=must)}

    assert found() == {"open", "team", "mine"}
    assert found(("readers", ["bob", "*"])) == {"open", "team"}
    assert found(("readers", ["bob", "cy"]), ("source_id", ["T"])) == {"mine"}
    assert found(("readers", ["nobody"])) == set()
    [hit] = store.search([1.0, 1.0, 1.0, 1.0], 1, must=[("doc_id", ["team"])])
    assert hit.id == point_id("S", "team", 0) and hit.score == pytest.approx(1.0, abs=1e-4)


def _sibling(store: VectorStore, model: str) -> VectorStore:
    """The same store's collection for another model."""
    if isinstance(store, EdgeStore):
        return EdgeStore(store.folder, store.alias, model, store.dim)
    assert isinstance(store, ServerStore)
    return ServerStore(store.client, store.alias, model, store.dim)


def test_readers_stay_on_the_published_collection_until_the_alias_moves(store: VectorStore) -> None:
    _write(store, "S", "old", "v1", 1)
    new = _sibling(store, "next-model")
    new.ensure_collection()
    _write(new, "S", "new", "v1", 1)

    assert new.alias_target() == store.collection  # the first collection got the alias; the next one waits
    assert [h.payload["doc_id"] for h in new.search([1.0] * 4, 5)] == ["old"]
    new.publish()
    new.drop_collection(store.collection)
    assert [h.payload["doc_id"] for h in store.search([1.0] * 4, 5)] == ["new"]
    assert new.collections() == [new.collection]


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


def _store(wire_args: dict, **store_args) -> tuple[ServerStore, _Wire]:
    wire = _Wire(QdrantClient(location=":memory:"), **wire_args)
    store = ServerStore(
        wire,  # type: ignore[arg-type]
        "documents",
        "test-model",
        384,
        retry=RetryPolicy(max_attempts=6, sleep=lambda _s: None),
        **store_args,
    )
    store.ensure_collection()
    return store, wire


def _document(chunks: int) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(7)
    ids = [point_id("S", "big", i) for i in range(chunks)]
    payloads = [{"source_id": "S", "doc_id": "big", "version": "v1", "text": "é" * 250 + "x" * 250} for _ in ids]
    return ids, rng.standard_normal((chunks, 384)).astype(np.float32), payloads


def test_a_document_over_the_budget_goes_in_several_requests_each_under_it() -> None:
    budget = 200_000
    store, wire = _store({}, request_budget_bytes=budget)
    ids, vectors, payloads = _document(120)  # ~1.1 MB as JSON

    store.upsert(ids, vectors, payloads)

    assert len(wire.requests) >= 5
    assert all(size <= budget for _, size in wire.requests), wire.requests
    assert sum(count for count, _ in wire.requests) == 120
    assert store.count() == 120


def test_a_transient_error_is_retried_and_the_points_land_once() -> None:
    error = UnexpectedResponse(503, "Service Unavailable", b"overloaded", Headers())
    store, wire = _store({"error": error, "failures": 2})
    ids, vectors, payloads = _document(10)

    store.upsert(ids, vectors, payloads)

    assert wire.attempts == 3
    assert store.count() == 10


def test_a_connection_reset_is_retried() -> None:
    error = ResponseHandlingException(ConnectionResetError(104, "Connection reset by peer"))
    store, wire = _store({"error": error, "failures": 1})
    store.upsert(*_document(3))
    assert (wire.attempts, store.count()) == (2, 3)


def test_a_bad_request_fails_at_once_with_one_line() -> None:
    body = b'{"status":{"error":"Wrong input: Vector dimension error: expected dim: 384, got 3"}}'
    error = UnexpectedResponse(400, "Bad Request", body, Headers())
    store, wire = _store({"error": error, "failures": 99})

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
