"""The embedded vector store: Qdrant Edge (qdrant-edge-py, pinned: it is beta) in this process.

Layout under the store's folder::

    lock                 held (flock) by the one process that has the store open
    aliases.json         alias -> collection, replaced atomically on publish
    shards/<collection>  one Edge shard per model's collection

One process at a time: Edge itself refuses a second process on a shard, and the alias file needs one writer, so
the whole folder is locked. A folder of the old embedded store (qdrant-client's local mode) is carried over on
first open (flows/rag/store_carry.py).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import qdrant_edge as qe

from flows.common.atomic_file import write_atomically
from flows.common.errors import ServiceUnavailable
from flows.common.process_cache import ProcessCache
from flows.rag.sparse import Sparse
from flows.rag.store import (
    INDEXED_FIELDS,
    RRF_K,
    SPARSE_VECTOR,
    Hit,
    Must,
    UpsertError,
    VectorStore,
    dense_vector,
)
from flows.rag.upsert_batches import DEFAULT_BUDGET_BYTES

log = logging.getLogger(__name__)
T = TypeVar("T")

ALIASES = "aliases.json"
SHARDS = "shards"
_NEW = ".new-"  # a shard being built; renamed into place once complete
_OLD = ".old-"  # a shard being replaced, moved aside until its successor is in place
# Edge maps its WAL and segments from sparse files: opening a shard, writing or optimizing on a full disk kills the
# process with SIGBUS (measured on 0.9.0) instead of failing. So each of them first checks that the disk has room:
# a write this many times its JSON estimate (WAL record, segment, payload indexes, the optimizer's copy later),
# plus a margin that covers a WAL segment and a new segment's files (~52 MB for one point where nothing is sparse).
_ROOM_FACTOR = 4
_ROOM_MARGIN = 64 << 20
_SCHEMAS = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer}
# Sized for millions of chunks in a few GB (docs/store.md, "Memory at a million chunks", measured at 200k 384-d points
# against the engine's defaults): searches run on int8 copies of the vectors, rescored on the originals with twice the
# candidates (recall@10 against exact search 0.998; 0.922 without rescoring), both left in their files (Cold) for the
# page cache to keep: kept in memory (Cached), the copies are read whole at every open (7.4 of 7.7 s at 1M points),
# where a first search reads ~1 s of them and later ones a few ms; a segment stops growing at ~150 MB of vectors, so an
# optimize indexes the new points instead of merging and re-indexing everything (per call 4-15 s, not 108 then 252 s;
# peak RSS 890 MB, not 2.1 GB).
_SEGMENT_KB = 150_000
_RESCORED = qe.SearchParams(quantization=qe.QuantizationSearchParams(rescore=True, oversampling=2.0))


def check_room(path: Path, needed: int) -> None:
    """Fail like the file system would (ENOSPC, which the CLI reports in one line) before Edge meets a full disk."""
    if shutil.disk_usage(path).free < needed + _ROOM_MARGIN:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def new_shard(path: Path, dim: int, *, sparse: bool = False) -> qe.EdgeShard:
    """An empty shard of ``dim``-d cosine vectors (the unnamed default vector) with the filter fields indexed, and
    with ``sparse`` the BM25 vector beside them (a carried-over store has none: its points have no text vectors)."""
    # 0.9.0 has sparse vectors with the IDF modifier (qe.Modifier.Idf: the engine weighs each term by its inverse
    # document frequency over the shard at query time) and RRF fusion of prefetches (qe.Fusion.Rrf), as the server.
    sparse_vectors = {SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, memory=qe.Memory.Cold),
        sparse_vectors=sparse_vectors,
        quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Cold),
        optimizers=qe.EdgeOptimizersConfig(max_segment_size=_SEGMENT_KB),
    )
    shard = qe.EdgeShard.create(str(path), config)
    for field, kind in INDEXED_FIELDS.items():
        shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMAS[kind]))
    return shard


def _sparse(words: Sparse) -> qe.SparseVector:
    return qe.SparseVector(indices=list(words.indices), values=list(words.values))


def edge_point(point_id: Any, vector: Sequence[float], words: Sparse | None, payload: dict[str, Any]) -> qe.Point:
    """One point as a shard stores it: the dense vector unnamed, and the BM25 one beside it where the shard has it."""
    return qe.Point(
        id=point_id, vector=vector if words is None else {"": vector, SPARSE_VECTOR: _sparse(words)}, payload=payload
    )


class EdgeFolder:
    """The store's folder, locked for this process: its shards (opened on first use) and its aliases."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Prefect runs a flow's tasks in threads, and the binding does not promise that a shard takes calls from
        # several at once: every call on a shard holds this.
        self.guard = threading.RLock()
        self._shards: dict[str, qe.EdgeShard] = {}
        root.mkdir(parents=True, exist_ok=True)
        self._lock: IO[str] | None = _take_lock(root)
        (root / SHARDS).mkdir(exist_ok=True)
        for unfinished in (root / SHARDS).glob(f"{_NEW}*"):
            shutil.rmtree(unfinished)
        for retired in (root / SHARDS).glob(f"{_OLD}*"):
            live = root / SHARDS / retired.name.removeprefix(_OLD)
            if live.exists():
                shutil.rmtree(retired)
            else:  # a replacement that stopped between its two renames: the old shard is still the one
                os.rename(retired, live)

    def names(self) -> list[str]:
        return sorted(p.name for p in (self.root / SHARDS).iterdir() if not p.name.startswith((_NEW, _OLD)))

    def has(self, name: str) -> bool:
        return (self.root / SHARDS / name).is_dir()

    def sparse_vectors(self, name: str) -> set[str]:
        """Shard ``name``'s sparse vectors. 0.9.0 has no getter for an open shard's config; it keeps it in
        edge_config.json, which EdgeShard.load reads (and which a shard made before hybrid search has too)."""
        config = json.loads((self.root / SHARDS / name / "edge_config.json").read_text(encoding="utf-8"))
        return set(config.get("sparse_vectors") or {})

    def shard(self, name: str) -> qe.EdgeShard:
        with self.guard:
            if name not in self._shards:
                check_room(self.root, 0)
                self._shards[name] = qe.EdgeShard.load(str(self.root / SHARDS / name))
            return self._shards[name]

    def install(self, name: str, build: Callable[[Path], T]) -> T:
        """Create or replace shard ``name`` with ``build(path)`` (which leaves it closed) under a temporary name,
        then rename it into place: a crash or a failed build midway leaves the previous shard, or none, never a
        half-made one. Returns what ``build`` returned."""
        with self.guard:
            tmp, target = self.root / SHARDS / f"{_NEW}{name}", self.root / SHARDS / name
            shutil.rmtree(tmp, ignore_errors=True)
            check_room(self.root, 0)
            try:
                built = build(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if not target.exists():
                os.rename(tmp, target)
                return built
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            retired = self.root / SHARDS / f"{_OLD}{name}"
            os.rename(target, retired)
            os.rename(tmp, target)
            shutil.rmtree(retired)
            return built

    def drop(self, name: str) -> None:
        with self.guard:
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self.root / SHARDS / name, ignore_errors=True)

    def aliases(self) -> dict[str, str]:
        path = self.root / ALIASES
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def set_aliases(self, aliases: Mapping[str, str]) -> None:
        with self.guard:
            write_atomically(self.root / ALIASES, json.dumps(dict(sorted(aliases.items())), indent=1) + "\n")

    def close(self) -> None:
        with self.guard:
            for shard in self._shards.values():
                shard.close()
            self._shards.clear()
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None


def _take_lock(root: Path) -> IO[str]:
    fh = (root / "lock").open("a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ServiceUnavailable(
            f"embedded Qdrant at {root} is in use by another process; wait for it to finish"
            " or use a Qdrant server (--qdrant-url)"
        ) from None
    return fh


_folders: ProcessCache[Path, EdgeFolder] = ProcessCache(EdgeFolder.close)


def open_edge(path: Path) -> EdgeFolder:
    """The store's folder, opened once per process (and carried over from the old embedded store first)."""
    key = path.resolve()
    return _folders.get_or_open(key, lambda: _open_folder(key))


def _open_folder(root: Path) -> EdgeFolder:
    from flows.rag.store_carry import carry_over, is_local_mode

    folder = EdgeFolder(root)
    try:
        if is_local_mode(root):
            carry_over(folder)
    except BaseException:
        folder.close()
        raise
    return folder


def close_edge(path: Path) -> None:
    """Close the store's folder in this process, so another process may open it."""
    _folders.close(path.resolve())


def _match(must: Must) -> list[qe.FieldCondition]:
    return [qe.FieldCondition(key=field, match=qe.MatchAny(list(values))) for field, values in must]


def _filter(must: Must) -> qe.Filter | None:
    return qe.Filter(must=_match(must)) if must else None


def _doc_filter(source_id: str, doc_ids: Sequence[str]) -> qe.Filter:
    return qe.Filter(must=_match([("source_id", [source_id]), ("doc_id", list(doc_ids))]))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class EdgeStore(VectorStore):
    def __init__(
        self,
        folder: EdgeFolder,
        alias: str,
        model: str,
        dim: int,
        *,
        request_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        super().__init__(alias, model, dim, request_budget_bytes=request_budget_bytes)
        self.folder = folder
        self._unoptimized = False

    def _call(self, method: str, *args: Any, name: str | None = None) -> Any:
        """Shard ``method`` on this collection (or ``name``), one call at a time (``EdgeFolder.guard``)."""
        with self.folder.guard:
            return getattr(self.folder.shard(name or self.collection), method)(*args)

    def _update(self, operation: qe.UpdateOperation) -> None:
        self._call("update", operation)
        self._unoptimized = True

    def ensure_collection(self) -> None:
        if not self.folder.has(self.collection):
            self.folder.install(self.collection, lambda path: new_shard(path, self.dim, sparse=True).close())
        if self.alias_target() is None:
            self.publish()

    def alias_target(self) -> str | None:
        return self.folder.aliases().get(self.alias)

    def publish(self) -> None:
        self.folder.set_aliases(self.folder.aliases() | {self.alias: self.collection})

    def collections(self) -> list[str]:
        return self.folder.names()

    def drop_collection(self, name: str) -> None:
        self._with_sparse.pop(name, None)
        self.folder.drop(name)

    def _has_sparse(self, name: str) -> bool:
        return SPARSE_VECTOR in self.folder.sparse_vectors(name)

    def _add_text_vectors(self) -> bool:
        from flows.rag.store_carry import add_text_vectors

        with self.folder.guard:  # once, though a flow's tasks write from several threads
            if not self._has_sparse(self.collection):
                add_text_vectors(self.folder, self.collection, self.dim)
        return True

    def _write(
        self,
        ids: list[str],
        vectors: list[list[float]],
        sparse: list[Sparse] | None,
        payloads: list[dict[str, Any]],
        request_bytes: int,
    ) -> None:
        check_room(self.folder.root, _ROOM_FACTOR * request_bytes)
        points = [
            edge_point(i, v, None if sparse is None else sparse[n], p)
            for n, (i, v, p) in enumerate(zip(ids, vectors, payloads, strict=True))
        ]
        try:
            self._update(qe.UpdateOperation.upsert_points(points))
        except Exception as exc:  # Edge raises a plain exception for a bad vector or payload
            raise UpsertError(
                f"Qdrant Edge refused {len(points)} points for {self.collection}: {_one_line(exc)}"
            ) from exc

    def delete_stale(self, source_id: str, versions: Mapping[str, str]) -> None:
        if not versions:
            return
        per_document: list[Any] = [
            qe.Filter(must=_match([("doc_id", [doc_id])]), must_not=_match([("version", [version])]))
            for doc_id, version in versions.items()
        ]
        selector = qe.Filter(must=_match([("source_id", [source_id]), ("doc_id", list(versions))]), should=per_document)
        self._update(qe.UpdateOperation.delete_points_by_filter(selector))

    def delete_documents(self, source_id: str, doc_ids: Sequence[str]) -> None:
        if doc_ids:
            self._update(qe.UpdateOperation.delete_points_by_filter(_doc_filter(source_id, doc_ids)))

    def set_document_metadata(self, source_id: str, doc_id: str, metadata: dict[str, Any]) -> None:
        self._call("update", qe.UpdateOperation.set_payload_by_filter(_doc_filter(source_id, [doc_id]), metadata))

    def count(self, source_id: str | None = None) -> int:
        flt = qe.Filter(must=_match([("source_id", [source_id])])) if source_id else None
        return self._call("count", qe.CountRequest(exact=True, filter=flt))

    def points(self, fields: Sequence[str] | None = None, page: int = 1024) -> Iterator[tuple[str, dict[str, Any]]]:
        with_payload: bool | list[str] = True if fields is None else list(fields)
        offset = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=page, with_payload=with_payload, with_vector=False)
            records, offset = self._call("scroll", request)
            for record in records:
                yield str(record.id), record.payload or {}
            if offset is None:
                return

    def document_points(self, source_id: str, doc_id: str) -> list[tuple[dict[str, Any], list[float]]]:
        found: list[tuple[dict[str, Any], list[float]]] = []
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=1024, filter=_doc_filter(source_id, [doc_id]), with_payload=True, with_vector=True
            )
            records, offset = self._call("scroll", request)
            found += [(record.payload or {}, dense_vector(record.vector)) for record in records]
            if offset is None:
                return found

    def _search_dense(self, vector: Sequence[float], limit: int, must: Must) -> list[Hit]:
        served = self.alias_target()
        if served is None:
            return []
        request = qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(list(vector)), with_payload=True, filter=_filter(must), params=_RESCORED
        )
        return self._hits(request, served)

    def _search_hybrid(
        self, served: str, vector: Sequence[float], words: Sparse, candidates: int, must: Must
    ) -> list[Hit]:
        flt = _filter(must)
        request = qe.QueryRequest(
            limit=2 * candidates,
            prefetches=[
                qe.Prefetch(limit=candidates, query=qe.Query.Nearest(list(vector)), filter=flt, params=_RESCORED),
                qe.Prefetch(limit=candidates, query=qe.Query.Nearest(_sparse(words), using=SPARSE_VECTOR), filter=flt),
            ],
            query=qe.Fusion.Rrf(k=RRF_K),
            with_payload=True,
        )
        return self._hits(request, served)

    def _hits(self, request: qe.QueryRequest, served: str) -> list[Hit]:
        return [Hit(str(p.id), p.score, p.payload or {}) for p in self._call("query", request, name=served)]

    def optimize(self) -> None:
        """Build the HNSW index over what this process wrote (Edge has no background optimizer; unindexed
        segments are searched by brute force), then flush."""
        if self._unoptimized:
            check_room(self.folder.root, 0)
            self._call("optimize")
            self._call("flush")
            self._unoptimized = False
