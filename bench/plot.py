"""Draw docs/benchmarks.png from the JSON files the bench scripts wrote (chunks/s per stage: the CPU stages
and whole ingests of this machine, and the GPU embed table where embed_cuda.json was fetched), and, where
bench_store.py wrote store.json, docs/store-cost.png: each store's costs against its number of points.

.venv/bin/python bench/plot.py                          # from bench/out, this machine's latest runs
.venv/bin/python bench/plot.py --results docs/results   # the committed runs docs/benchmarks.md reports
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]


def bars(results: Path) -> list[tuple[str, float]]:
    result: list[tuple[str, float]] = []
    stages = results / "stages.json"
    if stages.is_file():
        result += [(row["stage"], row["chunks_per_s"]) for row in json.loads(stages.read_text())["rows"]]
    peer = results / "peer.json"
    if peer.is_file():
        full = [r for r in json.loads(peer.read_text())["runs"] if r["kind"] == "full"]
        for side, label in (("ours", "whole ingest, ours (rag-sync)"), ("peer", "whole ingest, unstructured-ingest")):
            rates = sorted(r["chunks_per_s"] for r in full if r["side"] == side)
            result.append((label + " (median)", rates[len(rates) // 2]))
    gpu = results / "embed_cuda.json"
    if gpu.is_file():
        measured = json.loads(gpu.read_text())
        for row in measured["rows"]:
            for way in ("stage", "encode", "forward"):
                result.append((f"{way}, {row['model']} ({measured['device']})", row[way]))
    return result


STORE_COSTS = (  # (key in store.json, axis label)
    ("open_s", "open (s)"),
    ("search_p50_ms", "search p50 (ms)"),
    ("filtered_p50_ms", "filtered search p50 (ms)"),
    ("peak_rss_mb", "peak RSS (MB)"),
)


def store_figure(results: Path) -> None:
    rows = json.loads((results / "store.json").read_text())
    fig, axes = plt.subplots(1, len(STORE_COSTS), figsize=(4 * len(STORE_COSTS), 3.4))
    for ax, (key, label) in zip(axes, STORE_COSTS, strict=True):
        for store in sorted({r["store"] for r in rows}):
            mine = sorted((r["points"], r[key]) for r in rows if r["store"] == store)
            ax.plot(*zip(*mine, strict=True), marker="o", label=store)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("points")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    target = ROOT / "docs" / "store-cost.png"
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "out")
    results = parser.parse_args().results
    if (results / "store.json").is_file():
        store_figure(results)
    data = bars(results)
    if not data:
        raise SystemExit("no results yet: run bench_stages.py, bench_peer.py (and bench_embed_gpu.py) first")
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(data) + 1.2))
    labels, values = zip(*data, strict=True)
    ax.barh(range(len(data)), values, color="#4c72b0")
    ax.set_yticks(range(len(data)), labels)
    ax.invert_yaxis()
    for i, value in enumerate(values):
        ax.text(value, i, f" {value:.1f}", va="center")
    ax.set_xscale("log")  # stages span two orders of magnitude
    ax.set_xlabel("chunks/s, log scale (CPU: 2 cores; GPU: the device named)")
    ax.set_title("Ingest throughput per stage, python3.11-doc sample")
    fig.tight_layout()
    target = ROOT / "docs" / "benchmarks.png"
    target.parent.mkdir(exist_ok=True)
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
