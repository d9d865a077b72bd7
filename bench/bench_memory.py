"""Where the ingest's main process spends its memory: resident size after each import and step, in one fresh
interpreter, in the order an ingest reaches them.

    .venv/bin/python bench/bench_memory.py

Prints VmRSS after each step and VmHWM (the peak) after an embedding pass at each batch size, with its
chunks/s: the transient activations are what the peak adds over the steady state. ``--width-step 1`` pads each
batch to its exact longest chunk instead of the stage's multiple (in bf16 every new width costs a kernel build
and its cache). ``--threads 1 2`` embeds each group of 512 chunks on those torch thread counts in turn, as the
pipeline does when parser processes go busy and idle beside it. Writes bench/out/memory.json.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUP_CHUNKS = 512  # as flows/rag/pipeline.py embeds them
IMPORTS = ["prefect", "flows.rag.sync", "flows.rag.ingest_batch", "torch", "transformers"]


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def parsed_elsewhere(files: int) -> list[str]:
    """Chunk texts parsed in a spawned process, as the parser pool does, so unstructured stays out of here."""
    from bench.bench_embed_gpu import real_chunks

    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(real_chunks, files, 0, Path(tmp)).result()


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8, help="python-doc pages whose chunks are embedded")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--width-step", type=int, help="pad batches to multiples of this; default: the stage's own")
    parser.add_argument("--threads", type=int, nargs="+", help="torch threads per group, in turn; default: all cores")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)

    rows: list[dict[str, float | str]] = [{"step": "python", "rss_mb": status_mb("VmRSS")}]

    def step(name: str) -> None:
        rows.append({"step": name, "rss_mb": status_mb("VmRSS")})

    for module in IMPORTS:
        importlib.import_module(module)
        step(f"import {module}")
    from bench.bench_embed_gpu import MINILM
    from flows.rag.embed import Embedder

    texts = parsed_elsewhere(args.files)
    embedder = Embedder(MINILM, "cpu")
    embedder.width_step = args.width_step or embedder.width_step
    step(f"load MiniLM ({embedder.precision})")
    embedder.embed_texts(texts[:32], 8)  # warm-up: first-call allocations and kernel choices
    for batch in args.batch_sizes:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        started = time.perf_counter()
        threads = itertools.cycle(args.threads or [None])
        for start in range(0, len(texts), GROUP_CHUNKS):
            embedder.embed_texts(texts[start : start + GROUP_CHUNKS], batch, next(threads))
        rate = len(texts) / (time.perf_counter() - started)
        rows.append({"step": f"peak after embedding, batch {batch}", "rss_mb": status_mb("VmHWM"), "chunks_s": rate})

    on = f"threads {' '.join(map(str, args.threads))} in turn" if args.threads else "all cores"
    print(f"\n{len(texts)} chunks of {args.files} python-doc pages embedded on CPU, {on}")
    print(f"{'step':<50} {'MB':>7} {'+MB':>7} {'chunks/s':>9}")
    previous = 0.0
    for row in rows:
        mb = float(row["rss_mb"])
        rate = f"{row['chunks_s']:.1f}" if "chunks_s" in row else ""
        print(f"{row['step']:<50} {mb:>7.0f} {mb - previous:>+7.0f} {rate:>9}")
        previous = mb
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
