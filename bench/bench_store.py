"""The embedded vector store: the old one (qdrant-client's local mode) against today's (Qdrant Edge through
flows/rag/store_edge.py), side by side.

    .venv/bin/python bench/bench_store.py --sizes 20000 100000 1000000

Per size and store, in a fresh process each (so peak RSS is that store's own): write points/s (2,000-point
upserts of random 384-d vectors with a ~500-character text payload), open (close, then reopen the same
directory), search p50/p95 (k=5, 50 queries) and filtered search p50 (k=5, on a keyword field with a payload
index on Edge; local mode has none and scans), and peak RSS. Edge's writes go through the store's byte budget
(8 MB requests) with its six payload indexes, and its index is built by ``optimize()``, timed apart. Local
mode keeps every point in Python memory and is skipped above LOCAL_MODE_MAX points (it needs ~28 GB and minutes
to open at 1M). Writes bench/out/store.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
BATCH = 2_000
DOCS_PER_POINT = 20  # points per doc_id: a filtered search matches ~20 points
LOCAL_MODE_MAX = 100_000
QUERIES = 50


def _data(size: int, start: int) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(start)
    n = min(BATCH, size - start)
    ids = [str(uuid.UUID(int=i + 1)) for i in range(start, start + n)]
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    text = "lorem ipsum dolor sit amet " * 19  # ~500 characters
    payloads = [{"source_id": "S", "doc_id": f"d{(start + i) // DOCS_PER_POINT}", "text": text} for i in range(n)]
    return ids, vectors, payloads


def _percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q) * 1000)


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def _local(path: Path, size: int) -> dict[str, float]:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection("bench", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    started = time.perf_counter()
    for start in range(0, size, BATCH):
        ids, vectors, payloads = _data(size, start)
        points = [
            models.PointStruct(id=i, vector=v.tolist(), payload=p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        client.upsert("bench", points=points, wait=True)
    write_s = time.perf_counter() - started
    client.close()
    started = time.perf_counter()
    client = QdrantClient(path=str(path))
    client.count("bench")
    open_s = time.perf_counter() - started
    query = np.random.default_rng(size).standard_normal(DIM).tolist()
    flt = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value="d7"))])
    search = _timed(lambda: client.query_points("bench", query=query, limit=5), QUERIES)
    filtered = _timed(lambda: client.query_points("bench", query=query, limit=5, query_filter=flt), 10)
    client.close()
    return {"write_s": write_s, "open_s": open_s, "search": search, "filtered": filtered}


def _edge(path: Path, size: int) -> dict[str, float]:
    """Through the project's store (flows/rag/store_edge.py): byte-bounded upserts, the filter fields indexed."""
    from flows.rag.store_edge import EdgeStore, close_edge, open_edge

    store = EdgeStore(open_edge(path), "bench", "bench-model", DIM)
    store.ensure_collection()
    started = time.perf_counter()
    for start in range(0, size, BATCH):
        store.upsert(*_data(size, start))
    store.folder.shard(store.collection).flush()
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    store.optimize()  # builds HNSW over the appendable segments; counted apart from the write
    optimize_s = time.perf_counter() - started
    close_edge(path)
    started = time.perf_counter()
    store = EdgeStore(open_edge(path), "bench", "bench-model", DIM)
    store.count()
    open_s = time.perf_counter() - started
    query = np.random.default_rng(size).standard_normal(DIM).tolist()
    search = _timed(lambda: store.search(query, 5), QUERIES)
    filtered = _timed(lambda: store.search(query, 5, must=[("doc_id", ["d7"])]), QUERIES)
    close_edge(path)
    return {"write_s": write_s, "optimize_s": optimize_s, "open_s": open_s, "search": search, "filtered": filtered}


STORES = {"qdrant-client local": _local, "qdrant-edge-py 0.9.0 (EdgeStore)": _edge}


def _child(store: str, size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        raw = STORES[store](Path(tmp) / "store", size)
    row = {
        "store": store,
        "points": size,
        "write_pps": size / raw["write_s"],
        "optimize_s": raw.get("optimize_s"),
        "open_s": raw["open_s"],
        "search_p50_ms": _percentile_ms(raw["search"], 50),
        "search_p95_ms": _percentile_ms(raw["search"], 95),
        "filtered_p50_ms": _percentile_ms(raw["filtered"], 50),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(row))


def _skip_reason(store: str, size: int) -> str | None:
    if store.startswith("qdrant-client") and size > LOCAL_MODE_MAX:
        return f"local mode keeps every point in Python memory: ~28 GB and ~90 s to open at 1M (max {LOCAL_MODE_MAX:,})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 1_000_000])
    parser.add_argument("--stores", nargs="+", choices=list(STORES), default=list(STORES))
    parser.add_argument("--child", nargs=2, metavar=("STORE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return
    rows: list[dict[str, Any]] = []
    print("| points | store | write points/s | optimize | open | search p50 / p95 | filtered p50 | peak RSS |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for store in args.stores:
            reason = _skip_reason(store, size)
            if reason:
                print(f"| {size:,} | {store} | skipped: {reason} | | | | | |", flush=True)
                continue
            done = subprocess.run(
                [sys.executable, __file__, "--child", store, str(size)], capture_output=True, text=True, check=True
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            optimize = f"{row['optimize_s']:.2f} s" if row["optimize_s"] is not None else "-"
            print(
                f"| {size:,} | {store} | {row['write_pps']:,.0f} | {optimize} | {row['open_s']:.2f} s"
                f" | {row['search_p50_ms']:.1f} / {row['search_p95_ms']:.1f} ms | {row['filtered_p50_ms']:.1f} ms"
                f" | {row['peak_rss_mb']:,.0f} MB |",
                flush=True,
            )
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "store.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
