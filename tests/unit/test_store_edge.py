"""The embedded store on Qdrant Edge: what the project relies on from the (beta, pinned) engine, the alias file,
one process at a time, and the carry-over of the old embedded store (qdrant-client's local mode)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from flows.common.errors import ServiceUnavailable
from flows.common.faults import as_swarm_error
from flows.rag import store_carry
from flows.rag.ids import point_id
from flows.rag.store import UpsertError
from flows.rag.store_carry import CARRIED
from flows.rag.store_edge import ALIASES, SHARDS, EdgeFolder, EdgeStore, close_edge, open_edge

MODEL = "test-model"
COLLECTION = f"documents__{MODEL}__4"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "qdrant"
    close_edge(tmp_path / "qdrant")


def _points(n: int, doc: str = "d") -> tuple[list[str], np.ndarray, list[dict]]:
    vectors = np.random.default_rng(3).standard_normal((n, 4)).astype(np.float32)
    payloads = [{"source_id": "S", "doc_id": doc, "version": "v1", "chunk_index": i} for i in range(n)]
    return [point_id("S", doc, i) for i in range(n)], vectors, payloads


def test_points_and_the_alias_outlive_the_process_that_wrote_them(root: Path) -> None:
    store = EdgeStore(open_edge(root), "documents", MODEL, 4)
    store.ensure_collection()
    store.upsert(*_points(30))
    store.optimize()
    close_edge(root)

    assert json.loads((root / ALIASES).read_text()) == {"documents": COLLECTION}
    assert sorted(p.name for p in root.iterdir()) == [ALIASES, "lock", SHARDS]
    again = EdgeStore(open_edge(root), "documents", MODEL, 4)
    again.ensure_collection()  # already there: nothing recreated
    assert again.count() == 30 and again.alias_target() == COLLECTION


def test_a_write_survives_a_process_killed_before_any_flush(root: Path) -> None:
    script = f"""
import os, numpy as np
from pathlib import Path
from flows.rag.store_edge import EdgeStore, open_edge
store = EdgeStore(open_edge(Path({str(root)!r})), "documents", {MODEL!r}, 4)
store.ensure_collection()
store.upsert([{point_id("S", "d", 0)!r}], np.ones((1, 4), dtype=np.float32), [{{"doc_id": "d"}}])
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert EdgeStore(open_edge(root), "documents", MODEL, 4).count() == 1


def test_a_second_opener_is_told_the_store_is_in_use(root: Path) -> None:
    open_edge(root)
    with pytest.raises(ServiceUnavailable, match="is in use by another process"):
        EdgeFolder(root.resolve())  # what another process does: its own lock on the folder
    close_edge(root)
    EdgeFolder(root.resolve()).close()  # free again once the holder closes


def test_a_wrong_vector_size_is_one_line(root: Path) -> None:
    store = EdgeStore(open_edge(root), "documents", MODEL, 4)
    store.ensure_collection()
    ids, _, payloads = _points(1)
    with pytest.raises(UpsertError) as raised:
        store.upsert(ids, np.ones((1, 3), dtype=np.float32), payloads)
    assert "\n" not in str(raised.value) and COLLECTION in str(raised.value)
    assert store.count() == 0


def _old_store(root: Path, points: int) -> tuple[list[str], np.ndarray, list[dict]]:
    """An embedded store as the previous release left it: local mode, one collection, the alias on it."""
    client = QdrantClient(path=str(root))
    client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    ids, vectors, payloads = _points(points)
    structs = [
        models.PointStruct(id=i, vector=v.tolist(), payload=p) for i, v, p in zip(ids, vectors, payloads, strict=True)
    ]
    client.upsert(COLLECTION, points=structs)
    alias = models.CreateAlias(collection_name=COLLECTION, alias_name="documents")
    client.update_collection_aliases(change_aliases_operations=[models.CreateAliasOperation(create_alias=alias)])
    client.close()
    return ids, vectors, payloads


def test_the_old_embedded_store_is_carried_over_without_re_embedding(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_carry, "PAGE", 64)  # several pages, from a small store
    ids, vectors, payloads = _old_store(root, 150)
    (root / SHARDS / f".new-{COLLECTION}").mkdir(parents=True)  # a carry-over killed midway left this

    store = EdgeStore(open_edge(root), "documents", MODEL, 4)
    store.ensure_collection()

    assert store.collections() == [COLLECTION] and store.alias_target() == COLLECTION
    assert store.count() == 150 and store.serves_hybrid()  # each point got the BM25 vector of its text
    assert dict(store.points()) == dict(zip(ids, payloads, strict=True))
    [hit] = store.search(vectors[70].tolist(), 1)
    assert hit.id == ids[70] and hit.score == pytest.approx(1.0, abs=1e-4)
    assert sorted(p.name for p in (root / CARRIED).iterdir()) == [".lock", "collection", "meta.json"]
    close_edge(root)
    assert EdgeStore(open_edge(root), "documents", MODEL, 4).count() == 150  # once: nothing left to carry


def test_a_write_to_a_full_disk_fails_like_the_file_system_would(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edge meets a full disk with SIGBUS (its files are sparse maps): the store refuses the write first."""
    store = EdgeStore(open_edge(root), "documents", MODEL, 4)
    store.ensure_collection()
    real = shutil.disk_usage(root)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: real._replace(free=512 * 1024))

    with pytest.raises(OSError) as raised:
        store.upsert(*_points(3))

    assert raised.value.errno == errno.ENOSPC
    error = as_swarm_error(raised.value)
    assert error is not None and str(error).startswith("no space left on the device")
    monkeypatch.undo()
    assert store.count() == 0
