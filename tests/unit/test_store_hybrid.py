"""Hybrid search on both engines (the server's through qdrant-client's in-memory mode, Qdrant Edge on disk): a rare
word finds its chunk where the vector alone does not, filters apply to both sides, collections made before it
keep working in dense mode, and the server gets the request and collection settings meant for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from flows.common.errors import ConfigError
from flows.rag.ids import point_id
from flows.rag.sparse import encode_query
from flows.rag.store import SEARCH_MODES, SPARSE_VECTOR, VectorStore, prefetch_limit
from flows.rag.store_edge import EdgeStore, close_edge, edge_point, new_shard, open_edge
from flows.rag.store_server import ServerStore

# The query's vector points at the "near" chunks; only "rare" has the query's word, and its vector points away.
QUERY = [1.0, 0.0, 0.0, 0.0]
WORD = "zyzzyva"
CHUNKS = {
    "rare": ("S", f"Field notes: one {WORD} beetle under the bark", [0.0, 0.0, 0.0, 1.0]),
    "near-1": ("S", "Field notes: beetles under the bark of an oak", [1.0, 0.05, 0.0, 0.0]),
    "near-2": ("T", "Field notes: bark beetles in the pine stand", [1.0, 0.1, 0.0, 0.0]),
    "near-3": ("T", "Field notes: the beetle survey's second week", [1.0, 0.2, 0.0, 0.0]),
    "decoy": ("T", f"A {WORD} mentioned in another source", [0.0, 1.0, 0.0, 0.0]),
}


def _engine(kind: str, tmp_path: Path, client: Any = None) -> VectorStore:
    if kind == "server":
        return ServerStore(client or QdrantClient(location=":memory:"), "documents", "test-model", 4)
    return EdgeStore(open_edge(tmp_path / "qdrant"), "documents", "test-model", 4)


@pytest.fixture(params=["server", "edge"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield request.param
    close_edge(tmp_path / "qdrant")


def _write(store: VectorStore, docs: list[str]) -> None:
    payloads = [{"source_id": CHUNKS[d][0], "doc_id": d, "version": "v1", "text": CHUNKS[d][1]} for d in docs]
    vectors = np.asarray([CHUNKS[d][2] for d in docs], dtype=np.float32)
    store.upsert([point_id(CHUNKS[d][0], d, 0) for d in docs], vectors, payloads)
    store.optimize()


def _docs(store: VectorStore, limit: int, mode: str, must: Any = ()) -> list[str]:
    return [hit.payload["doc_id"] for hit in store.search(QUERY, limit, must, text=f"the {WORD}", mode=mode)]


def test_a_rare_word_finds_its_chunk_in_hybrid_mode_where_the_vector_alone_does_not(kind: str, tmp_path: Path) -> None:
    store = _engine(kind, tmp_path)
    store.ensure_collection()
    _write(store, ["rare", "near-1", "near-2", "near-3"])

    assert "rare" not in _docs(store, 3, "dense")
    assert _docs(store, 3, "hybrid")[0] == "rare"
    assert set(_docs(store, 10, "hybrid")) == {"rare", "near-1", "near-2", "near-3"}  # the vector's side still counts


def test_filters_apply_to_both_sides_of_a_hybrid_search(kind: str, tmp_path: Path) -> None:
    store = _engine(kind, tmp_path)
    store.ensure_collection()
    _write(store, list(CHUNKS))

    found = _docs(store, 10, "hybrid", [("source_id", ["S"])])
    assert found[0] == "rare" and set(found) == {"rare", "near-1"}  # not the T decoy (text) nor near-2/3 (vector)
    assert _docs(store, 10, "hybrid", [("doc_id", ["decoy", "near-3"])])[0] == "decoy"
    assert _docs(store, 10, "hybrid", [("source_id", ["nobody"])]) == []


def test_rewritten_points_keep_their_text_vectors(kind: str, tmp_path: Path) -> None:
    """A copy by checksum (flows/rag/duplicates.py) rewrites the original's (payload, vector) under new ids."""
    store = _engine(kind, tmp_path)
    store.ensure_collection()
    _write(store, ["rare", "near-1", "near-2"])

    [(payload, vector)] = store.document_points("S", "rare")
    assert vector == pytest.approx(CHUNKS["rare"][2])
    store.upsert([point_id("S", "copy", 0)], np.asarray([vector], dtype=np.float32), [payload | {"doc_id": "copy"}])
    store.delete_documents("S", ["rare"])
    store.optimize()

    assert _docs(store, 2, "hybrid")[0] == "copy"


def test_a_server_collection_made_before_hybrid_search_stays_searchable_by_vector_only() -> None:
    store = _engine("server", Path("unused"))
    assert isinstance(store, ServerStore)
    store.client.create_collection(
        store.collection, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
    )
    store.ensure_collection()
    _write(store, ["rare", "near-1"])  # writes still work: no text vector is sent

    assert _docs(store, 1, "dense") == ["near-1"]
    with pytest.raises(ConfigError) as raised:
        _docs(store, 1, "hybrid")
    message = str(raised.value)
    assert "\n" not in message and store.collection in message and "dense" in message and "re-index" in message


def test_an_edge_shard_made_before_hybrid_search_gets_text_vectors_from_its_first_writer(tmp_path: Path) -> None:
    """Readers search it by vector alone; the first writer rebuilds it with a BM25 vector per point from the
    stored text, keeping ids, vectors and payloads (no re-embedding)."""
    docs = ["rare", "near-1", "near-2", "near-3"]
    payloads = [{"source_id": CHUNKS[d][0], "doc_id": d, "version": "v1", "text": CHUNKS[d][1]} for d in docs]
    ids = [point_id(CHUNKS[d][0], d, 0) for d in docs]

    def old_shard(path: Path) -> None:  # as an earlier release (or the carry-over of local mode) left it
        shard = new_shard(path, 4)
        points = [edge_point(i, CHUNKS[d][2], None, p) for i, d, p in zip(ids, docs, payloads, strict=True)]
        shard.update(qe.UpdateOperation.upsert_points(points))
        shard.close()

    reader = _engine("edge", tmp_path)
    assert isinstance(reader, EdgeStore)
    reader.folder.install(reader.collection, old_shard)
    reader.publish()
    assert not reader.serves_hybrid() and "rare" not in _docs(reader, 3, "dense")
    with pytest.raises(ConfigError):
        _docs(reader, 1, "hybrid")

    writer = _engine("edge", tmp_path)
    writer.ensure_collection()
    assert not writer.serves_hybrid()  # opening it changes nothing: a reader opens it too
    writer.upsert([], np.zeros((0, 4), dtype=np.float32), [])

    assert writer.serves_hybrid() and writer.count() == len(docs)
    assert dict(writer.points()) == dict(zip(ids, payloads, strict=True))
    assert "rare" not in _docs(writer, 3, "dense")
    assert _docs(writer, 3, "hybrid")[0] == "rare"  # the rare word is found through its text vector
    [(_, vector)] = writer.document_points("S", "rare")
    np.testing.assert_allclose(vector, CHUNKS["rare"][2], atol=1e-6)


def test_an_unknown_mode_is_refused_naming_the_known_ones(kind: str, tmp_path: Path) -> None:
    store = _engine(kind, tmp_path)
    store.ensure_collection()
    with pytest.raises(ConfigError) as raised:
        store.search(QUERY, 1, text=WORD, mode="keyword")
    assert all(mode in str(raised.value) for mode in SEARCH_MODES)


class _Recorder:
    """Wraps the real client and keeps the keyword arguments of each create_collection and query_points."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self.created: list[dict[str, Any]] = []
        self.queries: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_collection(self, collection_name: str, **kwargs: Any) -> bool:
        self.created.append(kwargs)
        return self._client.create_collection(collection_name, **kwargs)

    def query_points(self, collection_name: str, **kwargs: Any) -> models.QueryResponse:
        self.queries.append(kwargs)
        return self._client.query_points(collection_name, **kwargs)


def test_the_server_gets_two_filtered_prefetches_fused_by_rrf(tmp_path: Path) -> None:
    wire = _Recorder(QdrantClient(location=":memory:"))
    store = _engine("server", tmp_path, wire)
    store.ensure_collection()
    _write(store, list(CHUNKS))
    must = [("source_id", ["S", "T"])]

    for limit in (3, 12):
        store.search(QUERY, limit, must, text=f"The {WORD}!", mode="hybrid")
        request = wire.queries[-1]
        dense, sparse = request["prefetch"]
        assert request["limit"] == 2 * prefetch_limit(limit) and request["query"] == models.FusionQuery(
            fusion=models.Fusion.RRF
        )
        assert dense.limit == sparse.limit == max(4 * limit, 20) == prefetch_limit(limit)
        assert dense.query == QUERY and dense.using is None  # the unnamed dense vector
        assert sparse.using == SPARSE_VECTOR and sparse.query.indices == list(encode_query(WORD).indices)
        expected = models.Filter(must=[models.FieldCondition(key="source_id", match=models.MatchAny(any=["S", "T"]))])
        assert dense.filter == sparse.filter == expected
        assert dense.params.quantization.rescore  # int8 candidates rescored with the full vectors


def test_a_new_server_collection_is_made_for_a_corpus_larger_than_memory(tmp_path: Path) -> None:
    wire = _Recorder(QdrantClient(location=":memory:"))
    store = _engine("server", tmp_path, wire)
    store.ensure_collection()
    store.ensure_collection()  # already there: not made again

    [settings] = wire.created
    assert settings["vectors_config"].on_disk and settings["on_disk_payload"]
    scalar = settings["quantization_config"].scalar
    assert scalar.type == models.ScalarType.INT8 and scalar.always_ram
    assert settings["hnsw_config"].on_disk is False  # the graph every search walks stays in memory
    served = wire.get_collection(store.collection).config.params
    assert served.sparse_vectors[SPARSE_VECTOR].modifier == models.Modifier.IDF
    assert served.vectors.size == 4  # still the unnamed vector: dense searches unchanged


def test_chunks_at_mirrored_ranks_tie_and_come_in_the_same_order_every_time(kind: str, tmp_path: Path) -> None:
    """One chunk is first by vector and second by text, the other the reverse: RRF scores them the same, and the
    engines ordered such ties differently from one process to the next."""
    store = _engine(kind, tmp_path)
    store.ensure_collection()
    texts = {"by-vector": f"one {WORD} among many other words about the bark", "by-text": f"{WORD} {WORD} {WORD}"}
    vectors = {"by-vector": [1.0, 0.0, 0.0, 0.0], "by-text": [0.7, 0.7, 0.0, 0.0]}
    ids = [point_id("S", doc, 0) for doc in texts]
    payloads = [{"source_id": "S", "doc_id": doc, "version": "v1", "text": text} for doc, text in texts.items()]
    store.upsert(ids, np.asarray(list(vectors.values()), dtype=np.float32), payloads)
    store.optimize()
    hits = store.search(QUERY, 2, text=WORD, mode="hybrid")
    assert hits[0].score == hits[1].score
    assert [hit.id for hit in hits] == sorted(ids)
    assert [hit.id for hit in store.search(QUERY, 1, text=WORD, mode="hybrid")] == sorted(ids)[:1]
