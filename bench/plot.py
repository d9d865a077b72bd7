"""Draw docs/benchmarks.png from the JSON files the bench scripts wrote (chunks/s per stage: the CPU stages
and whole ingests of this machine, and the GPU embed table where embed_cuda.json was fetched).

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "out")
    data = bars(parser.parse_args().results)
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
