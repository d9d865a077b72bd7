"""Qdrant backups: a point export through qdrant-client (embedded or server), or server snapshots.

Export: every point with its vectors and payload, scrolled in pages into gzip'd JSON lines, the first line
holding the collection's vector configuration. Verified by restoring into a scratch collection and
comparing the point count and a sample of points (payload equal, vectors equal within float tolerance).
Server snapshots: created through the REST API, downloaded with a sha256 (checked against the server's
checksum when it reports one), then deleted on the server so they do not pile up there.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import QdrantClient, models

from flows.ops.backup_catalog import BackupFailed
from flows.ops.backup_names import url_segment

FORMAT = "swarm-qdrant-export/1"
PAGE = 256


def _vectors_config(client: QdrantClient, name: str) -> dict[str, Any]:
    params = client.get_collection(name).config.params
    vectors = params.vectors
    dense: Any
    if isinstance(vectors, dict):
        dense = {k: v.model_dump(mode="json", exclude_none=True) for k, v in vectors.items()}
    else:
        dense = vectors.model_dump(mode="json", exclude_none=True) if vectors is not None else None
    sparse = {k: v.model_dump(mode="json", exclude_none=True) for k, v in (params.sparse_vectors or {}).items()}
    return {"vectors": dense, "sparse_vectors": sparse}


def _points(client: QdrantClient, name: str) -> Iterator[models.Record]:
    offset = None
    while True:
        page, offset = client.scroll(name, limit=PAGE, offset=offset, with_vectors=True, with_payload=True)
        yield from page
        if offset is None:
            return


def export_collection(client: QdrantClient, name: str, dest: Path) -> int:
    """Write every point of ``name`` to ``dest`` (JSONL.gz); returns the number of points."""
    if not client.collection_exists(name):
        raise BackupFailed(f"Qdrant collection {name} does not exist")
    count = 0
    with gzip.open(dest, "wt", encoding="utf-8") as fh:
        header = {"format": FORMAT, "collection": name, **_vectors_config(client, name)}
        fh.write(json.dumps(header) + "\n")
        for p in _points(client, name):
            vector = p.vector.model_dump(mode="json") if hasattr(p.vector, "model_dump") else p.vector
            if isinstance(vector, dict):  # named or sparse vectors
                vector = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in vector.items()}
            fh.write(json.dumps({"id": p.id, "vector": vector, "payload": p.payload}) + "\n")
            count += 1
    return count


def read_export(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    fh = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115 - closed by the rows() generator
    try:
        header = json.loads(fh.readline())
    except (OSError, EOFError, ValueError) as exc:
        fh.close()
        raise BackupFailed(f"Qdrant export {path.name} is unreadable: {exc}") from exc
    if header.get("format") != FORMAT:
        fh.close()
        raise BackupFailed(f"{path.name} is not a {FORMAT} file")

    def rows() -> Iterator[dict[str, Any]]:
        with fh:
            for line in fh:
                yield json.loads(line)

    return header, rows()


def _create_like(client: QdrantClient, name: str, header: dict[str, Any]) -> None:
    dense = header["vectors"]
    if isinstance(dense, dict) and "size" not in dense:
        vectors: Any = {k: models.VectorParams.model_validate(v) for k, v in dense.items()}
    else:
        vectors = models.VectorParams.model_validate(dense) if dense else {}
    sparse = {k: models.SparseVectorParams.model_validate(v) for k, v in header.get("sparse_vectors", {}).items()}
    client.create_collection(name, vectors_config=vectors, sparse_vectors_config=sparse or None)


def restore_export(client: QdrantClient, path: Path, name: str, overwrite: bool = False) -> int:
    """Load an export into collection ``name``; an existing non-empty one is replaced only on request."""
    header, rows = read_export(path)
    if client.collection_exists(name):
        if client.count(name, exact=True).count and not overwrite:
            raise BackupFailed(f"Qdrant collection {name} exists and holds points: pass overwrite=True")
        client.delete_collection(name)
    _create_like(client, name, header)
    batch: list[models.PointStruct] = []
    total = 0
    try:
        for row in rows:
            batch.append(models.PointStruct(id=row["id"], vector=row["vector"], payload=row["payload"]))
            if len(batch) == PAGE:
                client.upsert(name, batch, wait=True)
                total, batch = total + len(batch), []
    except (OSError, EOFError, ValueError) as exc:
        raise BackupFailed(f"Qdrant export {path.name} is damaged after {total} points: {exc}") from exc
    if batch:
        client.upsert(name, batch, wait=True)
        total += len(batch)
    return total


def _close(a: Any, b: Any, tol: float = 1e-4) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int):
        return abs(a - b) <= tol
    return bool(a == b)


def verify_export(client: QdrantClient, path: Path, expected_count: int, sample: int = 20) -> str:
    """Restore into a scratch collection, compare count and a random sample; the scratch is deleted."""
    scratch = f"swarm_scratch_{uuid.uuid4().hex[:12]}"
    try:
        restored = restore_export(client, path, scratch)
        if restored != expected_count or client.count(scratch, exact=True).count != expected_count:
            raise BackupFailed(f"restored {restored} points, expected {expected_count}")
        _, rows = read_export(path)
        picked = random.Random(0).sample(list(rows), min(sample, expected_count)) if expected_count else []
        found = {p.id: p for p in client.retrieve(scratch, [r["id"] for r in picked], with_vectors=True)}
        for r in picked:
            p = found.get(r["id"])
            if p is None or p.payload != r["payload"] or not _close(p.vector, r["vector"]):
                raise BackupFailed(f"restored point {r['id']} differs from the export")
    finally:
        if client.collection_exists(scratch):
            client.delete_collection(scratch)
    return f"{expected_count} points restored and {len(picked)} sampled points identical"


def snapshot_collection(url: str, name: str, dest: Path, api_key: str | None = None, timeout_s: float = 3600) -> str:
    """Create a server snapshot, download it to ``dest``; returns its sha256."""
    headers = {"api-key": api_key} if api_key else {}
    snapshots = f"{url.rstrip('/')}/collections/{url_segment(name)}/snapshots"
    with httpx.Client(headers=headers, timeout=timeout_s, trust_env=False) as http:
        resp = http.post(snapshots, params={"wait": "true"})
        if resp.status_code != 200:
            raise BackupFailed(f"Qdrant snapshot of {name} failed: HTTP {resp.status_code} {resp.text[:200]}")
        info = resp.json()["result"]
        snapshot = f"{snapshots}/{url_segment(info['name'])}"  # the server's name is escaped as well
        digest = hashlib.sha256()
        with http.stream("GET", snapshot) as stream:
            if stream.status_code != 200:
                raise BackupFailed(f"Qdrant snapshot download failed: HTTP {stream.status_code}")
            with dest.open("wb") as fh:
                for chunk in stream.iter_bytes(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
        http.delete(snapshot)
    sha = digest.hexdigest()
    if info.get("checksum") and info["checksum"] != sha:
        raise BackupFailed(f"Qdrant snapshot {info['name']} checksum mismatch: server {info['checksum']}, got {sha}")
    if info.get("size") and info["size"] != dest.stat().st_size:
        raise BackupFailed(f"Qdrant snapshot {info['name']} is {dest.stat().st_size} bytes, server said {info['size']}")
    return sha


def restore_snapshot(
    url: str,
    name: str,
    path: Path,
    api_key: str | None = None,
    overwrite: bool = False,
    timeout_s: float = 3600,
) -> str:
    """Upload a snapshot file as collection ``name`` (snapshot data wins over any existing points).

    Only a 404 counts as "no such collection": any other answer to the overwrite check stops the restore."""
    headers = {"api-key": api_key} if api_key else {}
    collection = f"{url.rstrip('/')}/collections/{url_segment(name)}"
    with httpx.Client(headers=headers, timeout=timeout_s, trust_env=False) as http:
        existing = http.get(collection)
        if existing.status_code == 200:
            points = (existing.json().get("result") or {}).get("points_count") or 0
            if points and not overwrite:
                raise BackupFailed(f"Qdrant collection {name} exists and holds {points} points: pass overwrite=True")
        elif existing.status_code != 404:
            raise BackupFailed(
                f"cannot tell whether Qdrant collection {name} exists: HTTP {existing.status_code}"
                f" {existing.text[:200]}"
            )
        with path.open("rb") as fh:
            resp = http.post(
                f"{collection}/snapshots/upload",
                params={"priority": "snapshot", "wait": "true"},
                files={"snapshot": (path.name, fh, "application/octet-stream")},
            )
        if resp.status_code != 200:
            raise BackupFailed(f"Qdrant snapshot upload into {name} failed: HTTP {resp.status_code} {resp.text[:200]}")
    return f"snapshot {path.name} recovered into {name}"
