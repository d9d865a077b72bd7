"""What Prefect adds to an ingest: the same work through rag-sync (flow, tasks, sub-flows, artifacts) and
through the plain functions under it (plan → BatchIndexer per batch), alternated, each on an empty store.

    .venv/bin/python bench/bench_overhead.py --files 40 --repeats 2
    .venv/bin/python bench/bench_overhead.py --corpus postgres-doc --files 1000 --model tiny --repeats 1

Both sides share one warm embedder and parser pool (loaded before the clock starts), so the difference is
orchestration: task/flow run records, state changes, artifacts, logging. Whole-run walls of a long ingest
differ by more than that from run to run on a shared machine, so each run also reports its time outside the
batches (wall minus the batches' own timed work): planning and opening the stores on both sides, plus
Prefect's machinery on the flow's side. The overhead is the difference of those, per the flow's wall time.
Prints a table; writes bench/out/overhead.json.

``--model tiny`` embeds with a one-layer, 64-wide BERT of random weights (MiniLM's tokenizer): the same
orchestration over far less compute, so the overhead it reports is an upper bound of MiniLM's, and a
1,000-file run fits in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from bench.corpus import CORPORA, sample_pages  # noqa: E402


def without_prefect(spec: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    from flows.rag.config import load_config
    from flows.rag.ingest_batch import index_documents
    from flows.rag.resources import open_resources
    from flows.rag.sources.base import iter_batches
    from flows.rag.sync import plan_changes

    config = load_config(overrides)
    resources = open_resources(config)
    src = resources.source(spec)
    plan, _ = plan_changes.fn(resources, spec, src)
    chunks, batch_s = 0, 0.0
    for number, batch in enumerate(iter_batches(plan.to_ingest, config.batch_files), start=1):
        summary = index_documents.fn(resources, src, tuple(batch), f"{number:04d}")
        chunks, batch_s = chunks + summary["chunks"], batch_s + summary["seconds"]["total"]
    return {"chunks": chunks, "stage_seconds": {"batches": batch_s}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="python-doc")
    parser.add_argument("--model", default="", help="'tiny', or an embedding model; default: the config's")
    parser.add_argument("--batch-files", type=int, default=0, help="files per ingest-batch; 0: the config default")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)

    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync

    results: dict[str, list[float]] = {"plain functions": [], "rag-sync flow": []}
    outside: dict[str, list[float]] = {name: [] for name in results}  # wall minus the batches' own work
    chunks: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        sample_pages(docs, args.files, args.corpus)
        spec = LocalFolderSpec(path=str(docs))
        base: dict[str, Any] = {"batch_files": args.batch_files} if args.batch_files else {}
        if args.model == "tiny":
            from bench.bench_embed_gpu import MINILM, build_random_model

            base["embedding_model"] = str(build_random_model(Path(tmp) / "tiny", MINILM, 64, 1, 1))
        elif args.model:
            base["embedding_model"] = args.model
        # Warm-up on two pages: model, parser processes and the Prefect API start outside the clock.
        warm = Path(tmp) / "warm"
        sample_pages(warm, 2, args.corpus)
        rag_sync(LocalFolderSpec(path=str(warm)), {**base, "data_dir": str(Path(tmp) / "warm-data")})
        for repeat in range(args.repeats):
            for name in results:
                overrides = {**base, "data_dir": str(Path(tmp) / f"{name.split()[0]}-{repeat}")}
                started = time.perf_counter()
                out = rag_sync(spec, overrides) if name == "rag-sync flow" else without_prefect(spec, overrides)
                wall = time.perf_counter() - started
                results[name].append(wall)
                outside[name].append(wall - out["stage_seconds"]["batches"])
                chunks[name] = out["chunks"]
    bare, flow = statistics.median(results["plain functions"]), statistics.median(results["rag-sync flow"])
    extra = statistics.median(outside["rag-sync flow"]) - statistics.median(outside["plain functions"])
    overhead = 100 * extra / flow
    model = args.model or "the configured model"
    print(f"\n{args.files} {args.corpus} pages, {model}, {args.repeats} alternating repeats (median s)")
    print(f"{'way':<16} {'wall s':>8} {'outside batches s':>18} {'chunks':>7}  runs (wall/outside)")
    for name, walls in results.items():
        runs = " ".join(f"{w:.1f}/{o:.1f}" for w, o in zip(walls, outside[name], strict=True))
        print(
            f"{name:<16} {statistics.median(walls):>8.2f} {statistics.median(outside[name]):>18.2f}"
            f" {chunks[name]:>7}  {runs}"
        )
    print(f"Prefect overhead: {extra:+.2f} s outside the batches = {overhead:+.1f}% of the flow's wall time")
    print(f"(whole-run walls differ by {flow - bare:+.2f} s, mostly run-to-run noise of the batches' work)")
    report = {
        "files": args.files,
        "corpus": args.corpus,
        "model": model,
        "runs": results,
        "outside_batches": outside,
        "chunks": chunks,
        "overhead_s": extra,
        "overhead_pct": overhead,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
