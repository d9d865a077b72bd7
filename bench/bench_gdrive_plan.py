"""Scale benchmark of the Drive source's plan: first-sync listing and a 1%-changed incremental sync.

The fake Drive v3 server (testkit/gdrive_server.py) runs in its own process holding N files in F
folders (metadata only); each phase runs the real source (real google-api-python-client over HTTP,
SQLite ledger) in a fresh subprocess so its peak RSS is its own. Usage:

    python bench/bench_gdrive_plan.py --files 1000000 --folders 50000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import subprocess
import sys
import tempfile
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import Request, urlopen

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testkit.gdrive_server import FOLDER, GDOC, FakeDrive, FakeFile, Faults, _Handler


def generate(drive: FakeDrive, files: int, folders: int, seed: int = 1) -> str:
    """Root -> ~sqrt(F) top folders -> the rest below them; files spread evenly over all folders."""
    rng = random.Random(seed)
    root = "root0"
    drive.add_quiet(FakeFile(root, "Corpus", FOLDER, None))
    top = max(1, int(folders**0.5))
    ids: list[str] = []
    for n in range(folders):
        parent = root if n < top else ids[rng.randrange(top)]
        fid = f"d{n:07d}"
        drive.add_quiet(FakeFile(fid, f"folder {n}", FOLDER, parent))
        ids.append(fid)
    for n in range(files):
        native = n % 10 == 0
        f = FakeFile(
            f"f{n:08d}",
            f"document {n}.{'gdoc' if native else 'pdf'}",
            GDOC if native else "application/pdf",
            ids[n % folders],
            md5=None if native else f"{rng.getrandbits(128):032x}",
            size_override=None if native else rng.randrange(10_000, 5_000_000),
        )
        drive.add_quiet(f)
    drive._ids = files + folders
    return root


def mutate(drive: FakeDrive, share: float, seed: int = 2) -> dict[str, int]:
    """Change ``share`` of the files: 60% edits, 20% renames, 10% moves, 5% trashed, 5% new files."""
    rng = random.Random(seed)
    file_ids = [i for i in drive.files if i.startswith("f")]
    folder_ids = [i for i in drive.files if i.startswith("d")]
    counts = {"modified": 0, "renamed": 0, "moved": 0, "trashed": 0, "added": 0}
    for fid in rng.sample(file_ids, int(len(file_ids) * share)):
        roll = rng.random()
        if roll < 0.6:
            drive.files[fid].md5 = f"{rng.getrandbits(128):032x}"
            drive._touch(drive.files[fid])
            counts["modified"] += 1
        elif roll < 0.8:
            drive.rename(fid, drive.files[fid].name + " (renamed)")
            counts["renamed"] += 1
        elif roll < 0.9:
            drive.move(fid, rng.choice(folder_ids))
            counts["moved"] += 1
        elif roll < 0.95:
            drive.trash(fid)
            counts["trashed"] += 1
        else:
            drive.add(f"new {fid}.pdf", rng.choice(folder_ids), "application/pdf", b"x")
            counts["added"] += 1
    return counts


class _BenchHandler(_Handler):
    def do_POST(self) -> None:  # /_bench/mutate?share=0.01
        share = float(urlparse(self.path).query.split("=")[1])
        with self.server.drive.lock:
            counts = mutate(self.server.drive, share)
        self._send(200, counts)


def serve_forever(files: int, folders: int, ready: mp.Queue) -> None:
    drive = FakeDrive()
    root = generate(drive, files, folders)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BenchHandler)
    server.drive, server.faults = drive, Faults()  # type: ignore[attr-defined]
    ready.put((f"http://127.0.0.1:{server.server_address[1]}/", root))
    server.serve_forever()


def run_phase(phase: str, url: str, root: str, db: str, state: str) -> dict:
    """One sync in this process; prints a JSON line with time and peak RSS."""
    from google.auth.credentials import AnonymousCredentials

    from flows.common.db import Database
    from flows.rag.sources.base import KnownDocument
    from flows.rag.sources.gdrive import GoogleDriveSource, GoogleDriveSpec

    spec = GoogleDriveSpec(folder_ids=[root], api_endpoint=url)
    source = GoogleDriveSource(spec, Database(f"sqlite:///{db}"), AnonymousCredentials())
    state_path = Path(state)
    cursor, known = None, {}
    if phase == "incremental":
        saved = json.loads(state_path.read_text())
        cursor = saved["cursor"]
        # What rag-sync would hand over: the ledger's view of every document (counted in the RSS).
        known = {doc_id: KnownDocument(version, None, None) for doc_id, version in saved["docs"]}
        del saved
    start = time.perf_counter()
    changes = source.changes(cursor, known)
    elapsed = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if phase == "full":
        docs = [(d.doc_id, d.version) for d in changes.documents]
        state_path.write_text(json.dumps({"cursor": changes.next_cursor, "docs": docs}))
    return {
        "phase": phase,
        "seconds": round(elapsed, 1),
        "peak_rss_mib": round(rss_mib),
        "documents": len(changes.documents),
        "removed": len(changes.removed),
        "complete": changes.complete,
        "api_calls": source.api.api_calls,
        "quota_units": source.api.meter.total.units,  # Drive's per-method units (gdrive_quota.py)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--folders", type=int, default=50_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--phase", choices=["full", "incremental"])
    parser.add_argument("--url")
    parser.add_argument("--root")
    parser.add_argument("--db")
    parser.add_argument("--state")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.url, args.root, args.db, args.state)))
        return

    ready: mp.Queue = mp.get_context("fork").Queue()
    started = time.perf_counter()
    server = mp.get_context("fork").Process(target=serve_forever, args=(args.files, args.folders, ready))
    server.start()
    url, root = ready.get(timeout=1800)
    print(f"fake drive with {args.files:,} files in {args.folders:,} folders ready in "
          f"{time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db, state = f"{tmp}/ledger.db", f"{tmp}/state.json"
            common = ["--url", url, "--root", root, "--db", db, "--state", state]
            for phase in ("full", "incremental"):
                if phase == "incremental":
                    req = Request(f"{url}_bench/mutate?share={args.changed}", method="POST")
                    print("mutated:", urlopen(req, timeout=600).read().decode(), flush=True)
                out = subprocess.run(
                    [sys.executable, __file__, "--phase", phase, *common],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
    print("\n| phase | files | folders | seconds | peak RSS MiB | documents | removed | API calls | quota units |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['phase']} | {args.files:,} | {args.folders:,} | {r['seconds']} | {r['peak_rss_mib']} | "
              f"{r['documents']:,} | {r['removed']:,} | {r['api_calls']:,} | {r['quota_units']:,} |")  # fmt: skip


if __name__ == "__main__":
    main()
