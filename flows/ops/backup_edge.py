"""Backups of the embedded store (Qdrant Edge): one shard snapshot per collection, verified by restoring it.

A snapshot is a tar of the shard's folder, taken with the store's folder locked (no other process writes) and the
shard flushed, plus ``swarm-aliases.json``: the aliases that served the collection then. GNU tar writes it with
``--sparse``: Edge preallocates its files sparsely (a 100-point, 4-d shard is 136 KB on disk and 131 MB in apparent
size), and Edge's unpacking reads GNU sparse members back as sparse files. It is the layout Edge's own
``EdgeShard.unpack_snapshot`` restores (the call that also loads a Qdrant server's shard snapshot), so the
verification is a real restore: unpacked into a scratch folder beside the backup, loaded by Edge, its exact point
count and a sample of points (ids, payloads, dense and sparse vectors) compared with the live shard.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import qdrant_edge as qe

from flows.ops.backup_catalog import BackupFailed, run_tool
from flows.rag.store_edge import SHARDS, EdgeFolder, close_edge, open_edge

ALIASES_MEMBER = "swarm-aliases.json"
SAMPLE = 20
_PAGE = 1024


def is_edge_store(path: Path) -> bool:
    return (path / SHARDS).is_dir()


def open_store(path: Path) -> EdgeFolder:
    """The store's folder, locked for this process (``close_store`` releases it, so a sync may open it again);
    a folder in use by another process is one clear failure."""
    try:
        return open_edge(path)
    except Exception as exc:
        raise BackupFailed(str(exc)) from exc


def close_store(folder: EdgeFolder) -> None:
    close_edge(folder.root)


def store_bytes(folder: EdgeFolder, name: str) -> int:
    """What collection ``name`` takes on disk (allocated blocks, not the sparse files' apparent size)."""
    files = (p for p in (folder.root / SHARDS / name).rglob("*") if p.is_file())
    return sum(p.stat().st_blocks * 512 for p in files)


def _count(shard: qe.EdgeShard) -> int:
    return shard.count(qe.CountRequest(exact=True))


def _ids(shard: qe.EdgeShard) -> list[qe.PointId]:
    ids: list[qe.PointId] = []
    offset = None
    while True:
        page, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=_PAGE, with_payload=False, with_vector=False))
        ids += [p.id for p in page]
        if offset is None:
            return ids


def snapshot_collection(folder: EdgeFolder, name: str, dest: Path) -> int:
    """Write collection ``name`` as a shard snapshot to ``dest``; returns its point count."""
    if not folder.has(name):
        raise BackupFailed(f"the embedded store has no collection {name}")
    served_by = sorted(alias for alias, target in folder.aliases().items() if target == name)
    shard_dir = folder.root / SHARDS / name
    with folder.guard, tempfile.TemporaryDirectory(dir=dest.parent) as extra:
        (Path(extra) / ALIASES_MEMBER).write_text(json.dumps(served_by), encoding="utf-8")
        shard = folder.shard(name)  # no write in this process until the files are in the archive
        shard.flush()
        count = _count(shard)
        tar = ["tar", "--sparse", "--format=gnu", "-cf", str(dest), "-C", str(shard_dir), "."]
        run_tool([*tar, "-C", extra, ALIASES_MEMBER], f"tar of collection {name}")
    return count


def _vectors(record: qe.Record) -> dict[str, object]:
    """A point's vectors by name, sparse ones as (indices, values): the binding orders names as it likes."""
    named = record.vector if isinstance(record.vector, dict) else {"": record.vector}
    return {k: (list(v.indices), list(v.values)) if hasattr(v, "indices") else v for k, v in named.items()}


def _same(a: qe.Record, b: qe.Record) -> bool:
    # Compared exactly: a restore copies the engine's own files, so the numbers are equal bit for bit.
    return a.id == b.id and a.payload == b.payload and _vectors(a) == _vectors(b)


@contextmanager
def _unpacked(snapshot: Path) -> Iterator[qe.EdgeShard]:
    scratch = snapshot.with_name(f".verify-{uuid.uuid4().hex[:12]}")
    shard = None
    try:
        try:
            qe.EdgeShard.unpack_snapshot(str(snapshot), str(scratch))
            shard = qe.EdgeShard.load(str(scratch))
        except Exception as exc:  # the binding raises plain Exception with the engine's message
            raise BackupFailed(f"Edge cannot restore {snapshot.name}: {' '.join(str(exc).split())[:200]}") from exc
        yield shard
    finally:
        if shard is not None:
            shard.close()
        shutil.rmtree(scratch, ignore_errors=True)


def verify_snapshot(folder: EdgeFolder, name: str, snapshot: Path, expected: int) -> str:
    """Restore ``snapshot`` into a scratch shard and compare it with the live collection; returns a summary."""
    with _unpacked(snapshot) as restored, folder.guard:
        got = _count(restored)
        if got != expected:
            raise BackupFailed(f"the restored snapshot holds {got} points, the collection {expected}")
        ids = _ids(restored)
        picked = random.Random(0).sample(ids, min(SAMPLE, len(ids)))
        live = {p.id: p for p in folder.shard(name).retrieve(picked, with_payload=True, with_vector=True)}
        for point in restored.retrieve(picked, with_payload=True, with_vector=True):
            if point.id not in live or not _same(point, live[point.id]):
                raise BackupFailed(f"restored point {point.id} differs from the collection's")
    return f"{expected} points restored by Edge and {len(picked)} sampled points identical"


def restore_snapshot(folder: EdgeFolder, snapshot: Path, name: str, overwrite: bool = False) -> str:
    """Put ``snapshot`` back as collection ``name``; an existing collection with points is replaced only on request.
    The aliases that served it at backup time point at it again where they point nowhere now."""
    if name.startswith("."):
        raise BackupFailed(f"{name!r} cannot name a collection of the embedded store: it starts with a dot")
    if folder.has(name) and _count(folder.shard(name)) and not overwrite:
        raise BackupFailed(f"collection {name} exists and holds points: pass overwrite=True")
    served_by: list[str] = []

    def build(path: Path) -> None:
        try:
            qe.EdgeShard.unpack_snapshot(str(snapshot), str(path))
            qe.EdgeShard.load(str(path)).close()  # fails here, not in the next search, when the files are bad
            served_by.extend(json.loads((path / ALIASES_MEMBER).read_text(encoding="utf-8")))
        except Exception as exc:  # the binding raises plain Exception with the engine's message
            raise BackupFailed(f"Edge cannot restore {snapshot.name}: {' '.join(str(exc).split())[:200]}") from exc
        (path / ALIASES_MEMBER).unlink()

    with folder.guard:
        folder.install(name, build)  # replaces the collection only once the snapshot restored
        count = _count(folder.shard(name))
        aliases = folder.aliases()
        repointed = [a for a in served_by if aliases.get(a) is None or not folder.has(aliases[a])]
        if repointed:
            folder.set_aliases(aliases | dict.fromkeys(repointed, name))
    tail = f"; alias {', '.join(repointed)} serves it" if repointed else ""
    return f"restored {count} points into {name}{tail}"
