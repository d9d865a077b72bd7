"""How long the ``swarm`` CLI takes outside its flow: a no-op ingest cold (the local server starts), warm (it runs)
and with Prefect's temporary server (SWARM_PREFECT_SERVER=temporary, the old way); a full ingest's time outside
the flow (wall minus the flow's own seconds), first ever and with the server running (every file changed);
``swarm --help`` and ``swarm status`` (no Prefect, no models). Each row also gives the CPU seconds of the command's
processes (user + system; not the server's), which a busy machine inflates far less than the wall time.

    .venv/bin/python bench/bench_cli_start.py --files 20 --repeats 3

Every command is the real console script in a fresh process, as a user runs it, on a copy of the first
``--files`` python-doc pages, each mode with a data folder of its own. Every server it starts is stopped at the
end, also on failure. Prints a table; writes bench/out/cli_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus import sample_pages  # noqa: E402

SWARM = str(Path(sys.executable).parent / "swarm")
SECONDS_ROW = re.compile(r"│\s*seconds\s*│\s*([0-9.]+)\s*│")


def user_env(data: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no Prefect API configured, offline model files, this data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SWARM_"))}
    env.update(SWARM_DATA_DIR=str(data), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200", **extra)
    return env


Sample = tuple[float, float | None, float]  # wall s, the flow's own s (None: no flow), CPU s


def cpu_of_children() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(args: list[str], env: dict[str, str]) -> Sample:
    """Wall seconds of one command, the flow's own seconds from its summary (None for other commands), and the CPU
    seconds of the command and the processes it waited for (a server it started in the background is not)."""
    cpu, start = cpu_of_children(), time.perf_counter()
    done = subprocess.run([SWARM, *args], env=env, capture_output=True, text=True, timeout=1800)
    wall, cpu = time.perf_counter() - start, cpu_of_children() - cpu
    if done.returncode != 0:
        raise SystemExit(f"swarm {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    found = SECONDS_ROW.search(done.stdout)
    return wall, float(found.group(1)) if found else None, cpu


def change_every_file(docs: Path, revision: int) -> None:
    """A new version of every page (a comment appended): the next ingest re-indexes all of them."""
    for page in docs.iterdir():
        with page.open("a") as handle:
            handle.write(f"\n<!-- revision {revision} -->\n")


def import_seconds(module: str) -> float:
    """``-X importtime``'s cumulative time of ``module`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True
    )
    last = [line for line in done.stderr.splitlines() if line.rstrip().endswith(f"| {module}")][-1]
    return int(last.split("|")[1]) / 1e6


def run(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    docs = tmp / "docs"
    sample_pages(docs, args.files, "python-doc")
    rows: list[dict[str, Any]] = []

    def record(mode: str, what: str, samples: list[Sample]) -> None:
        walls = [wall for wall, _, _ in samples]
        outside = [wall - flow for wall, flow, _ in samples if flow is not None]
        rows.append({
            "mode": mode, "what": what, "runs": len(samples), "wall_s": round(statistics.median(walls), 2),
            "outside_flow_s": round(statistics.median(outside), 2) if outside else None,
            "cpu_s": round(statistics.median(cpu for _, _, cpu in samples), 2),
        })  # fmt: skip

    for mode, extra in (("temporary server", {"SWARM_PREFECT_SERVER": "temporary"}), ("local server", {})):
        env = user_env(tmp / mode.replace(" ", "-"), **extra)
        first = "first ever: migrates the server's database" if mode == "local server" else "a temporary server"
        record(mode, f"full ingest, {args.files} files ({first})", [timed(["ingest", str(docs)], env)])
        if mode == "local server":
            cold = []
            for _ in range(args.repeats):
                timed(["server", "stop"], env)
                cold.append(timed(["ingest", str(docs)], env))
            record(mode, "no-op ingest, cold (starts the server)", cold)
        noop = [timed(["ingest", str(docs)], env) for _ in range(args.repeats)]
        record(mode, "no-op ingest" + (", warm" if mode == "local server" else ""), noop)
        if mode == "local server":
            full = []
            for revision in range(args.repeats):
                change_every_file(docs, revision)
                full.append(timed(["ingest", str(docs)], env))
            record(mode, f"full ingest, {args.files} files changed, warm", full)
    record("-", "swarm status", [timed(["status"], user_env(tmp / "local-server")) for _ in range(args.repeats)])
    record("-", "swarm --help", [timed(["--help"], user_env(tmp / "help")) for _ in range(args.repeats)])
    rows.append({"mode": "-", "what": "import flows.cli (-X importtime)", "runs": 1,
                 "wall_s": round(import_seconds("flows.cli"), 2), "outside_flow_s": None, "cpu_s": None})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows = run(args, Path(tmp))
        finally:
            subprocess.run([SWARM, "server", "stop"], env=user_env(Path(tmp) / "local-server"), capture_output=True)
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores"
    print(f"{args.files} files, {load}\n")
    print("| mode | command | runs | wall s (median) | outside the flow s | CPU s |\n|---|---|---:|---:|---:|---:|")
    for row in rows:
        outside, cpu = ("" if row[key] is None else row[key] for key in ("outside_flow_s", "cpu_s"))
        print(f"| {row['mode']} | {row['what']} | {row['runs']} | {row['wall_s']} | {outside} | {cpu} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli_start.json").write_text(json.dumps({"files": args.files, "load": load, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
