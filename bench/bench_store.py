"""The embedded vector store: the old one (qdrant-client's local mode) against today's (Qdrant Edge through
flows/rag/store_edge.py), side by side.

    .venv/bin/python bench/bench_store.py --sizes 20000 100000 1000000

Per size and store, in a fresh process each (so peak RSS is that store's own): write points/s (2,000-point upserts
of random 384-d vectors with a ~500-character text payload, made outside the clock), open (close, then reopen the
same directory), the first search after it (what it faults in), search p50/p95 (k=5, 50 more queries) and filtered
search p50 (k=5, on a keyword field with a payload index on Edge; local mode has none and scans), and peak RSS:
all resident pages (ru_maxrss) and, in brackets, the anonymous ones alone (sampled every 0.2 s), since ru_maxrss
also counts the pages of Edge's memory-mapped files, which the kernel reclaims under pressure. Edge's writes go
through the store's byte budget (8 MB requests) with its six payload indexes, and its index is built by
``optimize()`` every OPTIMIZE_EVERY points and at the end, as an ingest optimizes after each batch (a million points
left unindexed until the end held 9 GB), timed apart. Local mode keeps every point in Python memory and is skipped
above LOCAL_MODE_MAX points (it needs ~28 GB and minutes to open at 1M). Writes bench/out/store.json."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
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
OPTIMIZE_EVERY = 100_000


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
    write_s = 0.0
    for start in range(0, size, BATCH):
        ids, vectors, payloads = _data(size, start)
        started = time.perf_counter()
        points = [
            models.PointStruct(id=i, vector=v.tolist(), payload=p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        client.upsert("bench", points=points, wait=True)
        write_s += time.perf_counter() - started
    client.close()
    started = time.perf_counter()
    client = QdrantClient(path=str(path))
    client.count("bench")
    open_s = time.perf_counter() - started
    query = np.random.default_rng(size).standard_normal(DIM).tolist()
    flt = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value="d7"))])
    first, *search = _timed(lambda: client.query_points("bench", query=query, limit=5), QUERIES + 1)
    filtered = _timed(lambda: client.query_points("bench", query=query, limit=5, query_filter=flt), 10)
    client.close()
    return {"write_s": write_s, "open_s": open_s, "first_s": first, "search": search, "filtered": filtered}


def _edge(path: Path, size: int) -> dict[str, float]:
    """Through the project's store (flows/rag/store_edge.py): byte-bounded upserts, the filter fields indexed;
    ``optimize()`` every OPTIMIZE_EVERY points, as an ingest does after each batch, timed apart from the writes."""
    from flows.rag.store_edge import EdgeStore, close_edge, open_edge

    store = EdgeStore(open_edge(path), "bench", "bench-model", DIM)
    store.ensure_collection()
    write_s = optimize_s = 0.0
    for start in range(0, size, BATCH):
        batch = _data(size, start)  # the bench's own input, made outside the clock as an ingest's comes embedded
        started = time.perf_counter()
        store.upsert(*batch)
        write_s += time.perf_counter() - started
        written = min(start + BATCH, size)
        if written == size or (OPTIMIZE_EVERY and written % OPTIMIZE_EVERY == 0):
            started = time.perf_counter()
            store.optimize()  # indexes what the writes left in appendable segments
            optimize_s += time.perf_counter() - started
    close_edge(path)
    started = time.perf_counter()
    store = EdgeStore(open_edge(path), "bench", "bench-model", DIM)
    store.count()
    open_s = time.perf_counter() - started
    query = np.random.default_rng(size).standard_normal(DIM).tolist()
    first, *search = _timed(lambda: store.search(query, 5), QUERIES + 1)
    filtered = _timed(lambda: store.search(query, 5, must=[("doc_id", ["d7"])]), QUERIES)
    close_edge(path)
    return {
        "write_s": write_s,
        "optimize_s": optimize_s,
        "open_s": open_s,
        "first_s": first,
        "search": search,
        "filtered": filtered,
    }


STORES = {"qdrant-client local": _local, "qdrant-edge-py 0.9.0 (EdgeStore)": _edge}


def _anon_mb() -> float:
    """This process's anonymous resident memory: its own, unlike the file pages of memory maps that ru_maxrss also
    counts, which the kernel drops when memory is short (Edge maps its vectors and payloads from files)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _child(store: str, size: int) -> None:
    peak_anon = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak_anon[0] = max(peak_anon[0], _anon_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        raw = STORES[store](Path(tmp) / "store", size)
    done.set()
    sampler.join()
    row = {
        "store": store,
        "points": size,
        "write_pps": size / raw["write_s"],
        "optimize_s": raw.get("optimize_s"),
        "open_s": raw["open_s"],
        "first_search_ms": raw["first_s"] * 1000,
        "search_p50_ms": _percentile_ms(raw["search"], 50),
        "search_p95_ms": _percentile_ms(raw["search"], 95),
        "filtered_p50_ms": _percentile_ms(raw["filtered"], 50),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_anon_mb": max(peak_anon[0], _anon_mb()),
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
    print(
        "| points | store | write points/s | optimize | open | first search | search p50 / p95 | filtered p50"
        " | peak RSS (anon) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for store in args.stores:
            reason = _skip_reason(store, size)
            if reason:
                print(f"| {size:,} | {store} | skipped: {reason} | | | | | | |", flush=True)
                continue
            done = subprocess.run(
                [sys.executable, __file__, "--child", store, str(size)], capture_output=True, text=True, check=True
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            optimize = f"{row['optimize_s']:.2f} s" if row["optimize_s"] is not None else "-"
            print(
                f"| {size:,} | {store} | {row['write_pps']:,.0f} | {optimize} | {row['open_s']:.2f} s"
                f" | {row['first_search_ms']:.1f} ms | {row['search_p50_ms']:.1f} / {row['search_p95_ms']:.1f} ms"
                f" | {row['filtered_p50_ms']:.1f} ms"
                f" | {row['peak_rss_mb']:,.0f} MB ({row['peak_anon_mb']:,.0f} MB) |",
                flush=True,
            )
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "store.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
