"""A reader's search, cold and warm, on an embedded store of N chunks.

    .venv/bin/python bench/bench_search.py --points 100000

Builds the store once (Qdrant Edge through flows/rag/store_edge.py, the default model's collection: random 384-d
vectors, ~60-word texts drawn from a 5,000-word vocabulary, so BM25 has real terms to weigh, and optimized), then
measures, for the default hybrid mode:

- cold: ``swarm search`` in a fresh process, wall time per run (imports, model load, store open, one query);
- warm: ``swarm search-server`` started on the store, and QUERIES searches of 3-5 vocabulary words through
  ``search_chunks`` with ``search_server`` set (HTTP to loopback, one embedding, one fused lookup), p50 / p95.

Prints a table and writes bench/out/search.json. Run it on a quiet machine: both are CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SWARM = str(Path(sys.executable).parent / "swarm")
VOCABULARY = 5_000
BATCH = 2_000
QUERIES = 200


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(f"w{int(i)}" for i in rng.zipf(1.3, n) % VOCABULARY)


def build(data: Path, points: int) -> float:
    from flows.rag.config import DEFAULT_MODEL
    from flows.rag.store_edge import EdgeStore, close_edge, open_edge

    store = EdgeStore(open_edge(data / "qdrant"), "documents", DEFAULT_MODEL, 384)
    store.ensure_collection()
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, points, BATCH):
        n = min(BATCH, points - start)
        ids = [str(uuid.UUID(int=i + 1)) for i in range(start, start + n)]
        payloads = [
            {"source_id": "S", "doc_id": f"d{(start + i) // 20}", "path": f"d{(start + i) // 20}.md",
             "text": _words(rng, 60)}
            for i in range(n)
        ]  # fmt: skip
        store.upsert(ids, rng.standard_normal((n, 384)).astype(np.float32), payloads)
    store.optimize()
    close_edge(data / "qdrant")
    return time.perf_counter() - started


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    return {**env, "SWARM_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}


def cold(data: Path, runs: int) -> list[float]:
    walls = []
    for n in range(runs):
        started = time.perf_counter()
        subprocess.run([SWARM, "search", f"w{n + 3} w17", "-k", "5"], env=_env(data), check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return walls


def warm(data: Path, port: int) -> list[float]:
    from flows.rag.config import load_config
    from flows.rag.search import search_chunks

    server = subprocess.Popen(
        [SWARM, "search-server", "--port", str(port)], env=_env(data), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # the model is loaded and the port open
        os.environ["SWARM_DATA_DIR"] = str(data)
        config = load_config({"search_server": f"http://127.0.0.1:{port}"})
        rng = np.random.default_rng(1)
        times = []
        for _ in range(QUERIES):
            query = _words(rng, int(rng.integers(3, 6)))
            started = time.perf_counter()
            search_chunks(config, [query], 5)
            times.append(time.perf_counter() - started)
        return times[5:]  # the first few warm the server's caches
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        data = Path(tmp)
        build_s = build(data, args.points)
        cold_s = cold(data, args.cold_runs)
        warm_s = warm(data, args.port)
    row = {
        "points": args.points,
        "build_s": build_s,
        "cold_wall_s": cold_s,
        "warm_p50_ms": float(np.percentile(warm_s, 50) * 1000),
        "warm_p95_ms": float(np.percentile(warm_s, 95) * 1000),
        "cpus": os.cpu_count(),
    }
    print("| chunks | cold `swarm search` (wall, each run) | warm p50 / p95 (through the server) |")
    print("|---:|---|---:|")
    cold_text = ", ".join(f"{s:.2f} s" for s in cold_s)
    print(f"| {args.points:,} | {cold_text} | {row['warm_p50_ms']:.1f} / {row['warm_p95_ms']:.1f} ms |")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "search.json").write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
