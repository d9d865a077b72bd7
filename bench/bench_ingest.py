"""Ingest benchmark: the first N pages of Debian's python3.11-doc library reference, through rag-sync
on embedded defaults (SQLite ledger, embedded Qdrant, CPU unless a GPU is present).

    .venv/bin/python bench/bench_ingest.py --files 300

Prints files/s, chunks/s, peak RSS (this process and its parser processes) and the no-op re-sync time.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from bench.corpus import sample_python_doc


def peak_rss_mb() -> float:
    """This process's peak. Parser processes are measured by bench_stages.py from /proc (a child's
    ru_maxrss starts from its parent's, so RUSAGE_CHILDREN would overstate them)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--parse-workers", type=int, default=0)
    args = parser.parse_args()

    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync

    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        files = sample_python_doc(docs, args.files)
        config = {"data_dir": str(Path(tmp) / "data"), "parse_workers": args.parse_workers}
        spec = LocalFolderSpec(path=str(docs))
        started = time.perf_counter()
        full = rag_sync(spec, config)
        full_s = time.perf_counter() - started
        started = time.perf_counter()
        noop = rag_sync(spec, config)
        noop_s = time.perf_counter() - started
        own = peak_rss_mb()

    rows = [
        ("files", f"{len(files)}"),
        ("indexed / skipped / failed", f"{full['indexed']} / {full['skipped']} / {full['failed']}"),
        ("chunks", f"{full['chunks']}"),
        ("chunks split to fit 256 tokens", f"{full['split_chunks']}"),
        ("full ingest, wall s", f"{full_s:.1f}"),
        ("files/s", f"{len(files) / full_s:.2f}"),
        ("chunks/s", f"{full['chunks'] / full_s:.1f}"),
        ("peak RSS main process, MB", f"{own:.0f}"),
        ("  of which embedding (main thread), s", f"{full['stage_seconds']['embed']:.1f}"),
        ("  of which Qdrant + ledger writes (writer thread), s", f"{full['stage_seconds']['write']:.1f}"),
        ("no-op re-sync, wall s", f"{noop_s:.2f}"),
        ("no-op chunks embedded", f"{noop['chunks']}"),
        ("no-op / full", f"{100 * noop_s / full_s:.1f}%"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'metric'.ljust(width)} | value\n{'-' * width}-|------")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


if __name__ == "__main__":
    main()
