"""The node preflight's checks, free of Prefect: each a small function answering ``(status, one-line detail)``,
and a runner that runs them all at once, each bounded by its own timeout.

A check that raises is a failed line (its exception's first line), never a traceback; a check still running at
its timeout is a failed line too and is abandoned (daemon thread), so one hung service costs its timeout only.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from flows.common.db import Database
from flows.common.errors import ConfigError, SwarmError
from flows.common.redact import redact
from flows.ops.inventory import Service
from flows.ops.judges import DEGRADED, UP
from flows.ops.probes import sweep, to_rows
from flows.rag.config import Precision
from flows.rag.ledger import RagLedger
from flows.rag.model_files import model_dimension
from flows.research.runs import check_interpreter

if TYPE_CHECKING:
    from flows.rag.embed import GpuNeed

OK, WARN, FAIL = "ok", "warn", "fail"
Verdict = tuple[str, str]
DETAIL_CHARS = 300


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | warn | fail
    detail: str


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], Verdict]
    timeout_s: float


def one_line(text: str) -> str:
    """A detail as the report shows it: its first line, shortened, any URL password hidden."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return redact(first)[:DETAIL_CHARS]


def _guarded(check: Check) -> Verdict:
    try:
        status, detail = check.run()
    except SwarmError as exc:  # its message is written for the user
        return FAIL, str(exc)
    except Exception as exc:
        return FAIL, f"{type(exc).__name__}: {exc}"
    return status, detail


def run_checks(checks: Sequence[Check]) -> list[CheckResult]:
    """Every check at once, in its own thread (with the caller's context: Prefect settings live in one)."""
    verdicts: dict[int, Verdict] = {}

    def work(index: int, check: Check) -> None:
        verdicts[index] = _guarded(check)

    started = time.monotonic()
    threads = []
    for index, check in enumerate(checks):
        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(work, index, check),
            name=f"preflight {check.name}",
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    for thread, check in zip(threads, checks, strict=True):
        thread.join(max(0.0, started + check.timeout_s - time.monotonic()))
    results = []
    for index, check in enumerate(checks):
        status, detail = verdicts.get(index, (FAIL, f"no answer within {check.timeout_s:g} s"))
        results.append(CheckResult(check.name, status, one_line(detail)))
    return results


def failed(results: Sequence[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.status == FAIL]


def summary(node: str, results: Sequence[CheckResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in (OK, WARN, FAIL)}
    return f"preflight of {node}: {counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} failed"


def format_lines(results: Sequence[CheckResult]) -> list[str]:
    """One aligned line per check: status, name, detail."""
    width = max((len(r.name) for r in results), default=0)
    return [f"{r.status:4}  {r.name:{width}}  {r.detail}" for r in results]


# --- local checks -----------------------------------------------------------------------------------------


def folder(path: str, writable: bool) -> Verdict:
    """The folder exists and can be written (a file is created and removed) or listed."""
    where = Path(path)
    if not where.is_dir():
        return FAIL, f"{path} is missing" if not where.exists() else f"{path} is not a folder"
    try:
        if writable:
            with tempfile.NamedTemporaryFile(dir=where, prefix=".preflight-"):
                pass
        else:
            next(where.iterdir(), None)
    except OSError as exc:
        return FAIL, f"{path} cannot be {'written' if writable else 'read'}: {exc.strerror or exc}"
    return OK, f"{path} {'writable' if writable else 'readable'}"


def nearest_existing(path: str) -> Path:
    """``path`` or its closest existing parent: the filesystem a folder is, or would be, on."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    return where


def disk(path: str, min_free_gib: float) -> Verdict:
    usage = shutil.disk_usage(nearest_existing(path))
    free = usage.free / 2**30
    detail = f"{free:.1f} GiB free of {usage.total / 2**30:.1f} GiB at {path} (minimum {min_free_gib:g})"
    return (OK if free >= min_free_gib else FAIL), detail


def port(host: str, number: int, owner: str, health_url: str) -> Verdict:
    """The port is free, or held by ``owner`` itself: ``health_url`` answers 200 (a worker checked by a run it
    started, a server checked on its own node)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, number))
            return OK, f"{host}:{number} free for {owner}"
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    try:
        answer = httpx.get(health_url, timeout=1, trust_env=False)
    except httpx.HTTPError:
        answer = None
    if answer is not None and answer.status_code == 200:
        return OK, f"{host}:{number} held by {owner}"
    return FAIL, f"{host}:{number} is in use by another program: {owner} cannot bind it"


GPU_QUERY = ("index", "name", "memory.free", "memory.total")


def judge_gpu_memory(csv_text: str, min_free_mib: float, model: tuple[str, GpuNeed, int] | None = None) -> Verdict:
    """``nvidia-smi --query-gpu=<GPU_QUERY> --format=csv,noheader,nounits``: some GPU has the free memory, and
    where the node embeds (``model``: its name, GpuNeed and embed_batch_tokens), room for it (judge_model_fit)."""
    rows = [[c.strip() for c in line.split(",")] for line in csv_text.strip().splitlines() if line.strip()]
    if not rows:
        return FAIL, "nvidia-smi lists no GPU"
    parts, best = [], 0.0
    for row in rows:
        if len(row) < len(GPU_QUERY):
            return FAIL, f"unreadable nvidia-smi line {','.join(row)!r}"
        index, name, free, total = row[: len(GPU_QUERY)]
        try:
            free_mib, total_mib = float(free), float(total)
        except ValueError:
            return FAIL, f"unreadable nvidia-smi memory for GPU {index}"
        best = max(best, free_mib)
        parts.append(f"gpu{index} {name} {free_mib:.0f}/{total_mib:.0f} MiB free")
    status = OK if best >= min_free_mib else FAIL
    detail = "; ".join(parts) + ("" if status == OK else f" (need {min_free_mib:g} MiB)")
    if model is None:
        return status, detail
    fit, how = judge_model_fit(best, model[1], model[2])
    worst = FAIL if FAIL in (status, fit) else WARN if WARN in (status, fit) else OK
    return worst, f"{detail}; {model[0]}: {how}"


def judge_model_fit(free_mib: float, need: GpuNeed, batch_tokens: int) -> Verdict:
    """Whether the embedding model and its forward passes of ``batch_tokens`` padded tokens fit ``free_mib``, by
    the arithmetic its load runs on the GPU (GpuNeed.budget), here on what nvidia-smi reports: read without a CUDA
    context, so without the gpu slot, whose holder may be using the card meanwhile."""
    try:
        budget = need.budget(int(free_mib * 2**20))
    except ConfigError as exc:
        return FAIL, str(exc)
    passes = min(budget, batch_tokens)
    detail = f"{need.weights // 2**20} MiB of weights, passes of {passes:,} padded tokens"
    detail += f" ({passes * need.per_token // 2**20:,} MiB)"
    if budget < batch_tokens:
        return WARN, f"{detail}: the free memory holds passes below embed_batch_tokens ({batch_tokens:,})"
    return OK, detail


def gpu(min_free_mib: float, model: tuple[str, GpuNeed, int] | None = None, binary: str = "nvidia-smi") -> Verdict:
    if shutil.which(binary) is None:
        return FAIL, f"{binary} not found: no NVIDIA driver on this node"
    query = ["--query-gpu=" + ",".join(GPU_QUERY), "--format=csv,noheader,nounits"]
    done = subprocess.run([binary, *query], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        return FAIL, f"nvidia-smi failed: {(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}"
    return judge_gpu_memory(done.stdout, min_free_mib, model)


# --- services -------------------------------------------------------------------------------------------


def _uncreated_sqlite(db: Database) -> bool:
    """An SQLite ledger not created yet: opening it would create it, and a check must change nothing."""
    return db.dialect == "sqlite" and not Path(db.url.removeprefix("sqlite:///")).is_file()


def ledger(url: str) -> Verdict:
    db = Database(url)
    if _uncreated_sqlite(db):
        return WARN, f"{url} not created yet; an embedded SQLite ledger is this node's alone"
    with db.connect() as conn:
        conn.execute("SELECT 1").fetchone()
    if db.dialect == "sqlite":
        return WARN, f"{url} answers, but an embedded SQLite ledger is this node's alone"
    return OK, f"{redact(url)} answers"


def judge_model(model: str, alias: str, published: str | None) -> Verdict:
    """This node's model against the one the cluster's alias serves (the ledger's ``rag_aliases``)."""
    if published is None:
        return OK, f"nothing published under {alias!r} yet"
    if published != model:
        return (
            FAIL,
            f"{alias!r} serves {published!r}, not this node's {model!r}: set SWARM_EMBEDDING_MODEL alike on every node",
        )
    return OK, f"the model {alias!r} serves"


def alertmanager(url: str | None) -> Verdict:
    if not url:
        return WARN, "SWARM_ALERTMANAGER_URL is not set: no alert target, alerts go nowhere"
    base = url.strip().rstrip("/").removesuffix("/api/v2/alerts")  # the setting may name the alerts endpoint
    answer = httpx.get(base + "/api/v2/status", timeout=5, trust_env=False)
    if answer.status_code != 200:
        return FAIL, f"{redact(base)}/api/v2/status answered HTTP {answer.status_code}"
    body = answer.json()
    version = (body.get("versionInfo") or {}).get("version", "?")
    return OK, f"Alertmanager {version} at {redact(base)} (cluster {(body.get('cluster') or {}).get('status', '?')})"


def judge_probe(status: str, detail: str) -> Verdict:
    """A health probe's verdict (``flows.ops.judges``) as a preflight one."""
    return {UP: OK, DEGRADED: WARN}.get(status, FAIL), detail


def qdrant(url: str | None, api_key: str | None, path: Path, timeout_s: float) -> Verdict:
    """The Qdrant server answers, with the health sweep's own probe; an embedded one is this node's alone."""
    if not url:
        return WARN, f"embedded Qdrant at {path}: this node's alone (set SWARM_QDRANT_BLOCK or SWARM_QDRANT_URL)"
    service = Service("qdrant", "qdrant", "local", url, options={"api_key": api_key} if api_key else {})
    [row] = to_rows(asyncio.run(sweep([service], timeout_s)))
    status, detail = judge_probe(row.status, row.detail)
    return status, f"{redact(url)}: {detail}"


def embedding(model: str, device: str, precision: Precision, ledger_url: str, alias: str, load: bool) -> Verdict:
    """The model is found (and with ``load``, loads and embeds), and is the one the cluster's alias serves."""
    if load:
        from flows.rag.embed import get_embedder  # torch and transformers: imported only where the model runs

        embedder = get_embedder(model, device, precision)
        if len(embedder.embed_texts(["preflight"])[0]) != embedder.dim:
            return FAIL, f"{model} gives vectors of another size than its {embedder.dim} dimensions"
        how = f"loads on {embedder.device} in {embedder.precision}"
    else:
        how = f"found ({model_dimension(model)} dimensions; this node plans, it does not embed)"
    db = Database(ledger_url)
    published = None if _uncreated_sqlite(db) else RagLedger(db).published_model(alias)
    status, detail = judge_model(model, alias, published)
    return status, f"{model} {how}; {detail}"


def gptr_python(python: str | None) -> Verdict:
    return OK, f"{check_interpreter(python)} imports gpt_researcher"


def is_local_address(host: str) -> bool:
    """Whether ``host`` names this machine (one of its addresses can be bound): the node serving an API URL."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)}
    except OSError:
        return False
    for address in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, 0))
                return True
            except OSError:
                continue
    return False
