"""``swarm``: the command line over the flows (ingest a folder, search it, show the ledger)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

# Quiet Prefect's console logging before it is imported; the run is still recorded with full logs.
if "-v" not in sys.argv and "--verbose" not in sys.argv:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# No usage telemetry from the temporary Prefect server: this machine may have no route out.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Without PREFECT_API_URL, Prefect starts a temporary server whose first start on a fresh machine migrates its
# database; on a small CPU that outlasts Prefect's 20 s default and the first ingest would die with a traceback.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.common import progress
from flows.common.errors import ConfigError, SwarmError
from flows.rag.report import SUMMARY_FIELDS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Swarm cluster pipelines.")
out = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option(help="Home of the embedded ledger and Qdrant [SWARM_DATA_DIR].")]
LedgerUrl = Annotated[str | None, typer.Option(help="postgresql://... or sqlite:///... [SWARM_LEDGER_URL].")]
QdrantUrl = Annotated[str | None, typer.Option(help="Qdrant server URL; default embedded [SWARM_QDRANT_URL].")]
QdrantPath = Annotated[Path | None, typer.Option(help="Embedded Qdrant folder [SWARM_QDRANT_PATH].")]
Collection = Annotated[str | None, typer.Option(help="Collection alias [SWARM_COLLECTION].")]
Model = Annotated[str | None, typer.Option(help="Embedding model [SWARM_EMBEDDING_MODEL].")]


def _overrides(**values: Any) -> dict[str, Any]:
    """Flags that were given; the rest comes from SWARM_* variables or defaults."""
    api_key = os.environ.get("SWARM_QDRANT_API_KEY")
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items() if v is not None}
    if api_key and "qdrant_api_key" not in given:
        given["qdrant_api_key"] = api_key
    return given


def _fail(error: SwarmError) -> None:
    err.print(f"[bold red]error:[/] {error}", highlight=False)
    raise typer.Exit(2 if isinstance(error, ConfigError) else 1)


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Folder to index (recursively).")],
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
    qdrant_url: QdrantUrl = None,
    qdrant_path: QdrantPath = None,
    collection: Collection = None,
    model: Model = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda [SWARM_DEVICE].")] = None,
    chunk_max_chars: Annotated[int | None, typer.Option(help="Hard chunk size bound.")] = None,
    chunk_new_after_chars: Annotated[int | None, typer.Option(help="Soft chunk size bound.")] = None,
    chunk_overlap_chars: Annotated[int | None, typer.Option(help="Overlap of split chunks.")] = None,
    max_file_mb: Annotated[float | None, typer.Option(help="Skip files larger than this.")] = None,
    batch_files: Annotated[int | None, typer.Option(help="Files per ingest batch.")] = None,
    parse_workers: Annotated[int | None, typer.Option(help="Parser processes (0: auto).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Index a folder into the vector store (new, changed and removed files only)."""
    from flows.rag.config import load_config
    from flows.rag.services import open_services
    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync

    config = _overrides(
        data_dir=data_dir, ledger_url=ledger_url, qdrant_url=qdrant_url, qdrant_path=qdrant_path,
        collection=collection, embedding_model=model, device=device, chunk_max_chars=chunk_max_chars,
        chunk_new_after_chars=chunk_new_after_chars, chunk_overlap_chars=chunk_overlap_chars,
        max_file_mb=max_file_mb, batch_files=batch_files, parse_workers=parse_workers,
    )  # fmt: skip
    bar = Progress(
        TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    )  # fmt: skip
    task_id = bar.add_task("files", total=None)

    def on_progress(what: str, advance: int) -> None:
        if what == "planned":
            bar.update(task_id, total=advance)
        elif what == "files":
            bar.advance(task_id, advance)

    try:
        # Check flags, folder, ledger and Qdrant before a flow run starts: a mistake is one line, not a run.
        services = open_services(load_config(config))
        _ = services.store
        spec = LocalFolderSpec(path=str(path.expanduser().resolve()))
        services.source(spec)
        with bar, progress.listening(on_progress):
            stats = rag_sync(spec, config)
    except SwarmError as error:
        _fail(error)
    table = Table(title=f"Synced {path}", show_header=False)
    for key, label in SUMMARY_FIELDS:
        table.add_row(label, str(stats.get(key, 0)))
    out.print(table)
    for doc_path, status, reason in stats.get("problems", []):
        out.print(f"  {status:8} {doc_path}: {reason}", highlight=False, soft_wrap=True)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many chunks to show.")] = 5,
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
    qdrant_url: QdrantUrl = None,
    qdrant_path: QdrantPath = None,
    collection: Collection = None,
    model: Model = None,
) -> None:
    """Show the chunks closest to QUERY, with score, document and a snippet."""
    from flows.rag.config import load_config
    from flows.rag.embed import get_embedder
    from flows.rag.services import open_services

    try:
        config = load_config(
            _overrides(data_dir=data_dir, ledger_url=ledger_url, qdrant_url=qdrant_url,
                       qdrant_path=qdrant_path, collection=collection, embedding_model=model)
        )  # fmt: skip
        services = open_services(config)
        vector = get_embedder(config.embedding_model, config.device, config.embed_precision).embed_texts([query])[0]
        hits = services.store.search(vector, k)
    except SwarmError as error:
        _fail(error)
    if not hits:
        out.print("no results (is anything indexed? try `swarm status`)")
        return
    for rank, hit in enumerate(hits, start=1):
        payload = hit.payload or {}
        where = payload.get("path", "?") + (f" p.{payload['page']}" if payload.get("page") else "")
        snippet = " ".join(str(payload.get("text", "")).split())[:200]
        out.print(
            f"{rank}. [{hit.score:.3f}] {payload.get('title', '?')} ({where})",
            highlight=False,
            soft_wrap=True,
        )
        out.print(f"   {snippet}", highlight=False, soft_wrap=True)


@app.command()
def status(
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
) -> None:
    """Documents in the ledger by status, and the last sync."""
    from flows.common.db import Database
    from flows.rag.config import load_config
    from flows.rag.ledger import RagLedger

    try:
        config = load_config(_overrides(data_dir=data_dir, ledger_url=ledger_url))
        ledger = RagLedger(Database(config.resolved_ledger_url))
        counts = ledger.status_counts()
        last = ledger.last_run()
    except SwarmError as error:
        _fail(error)
    table = Table(title="Documents by status")
    table.add_column("status")
    table.add_column("documents", justify="right")
    for name in ("indexed", "skipped", "failed", "pending", "deleted"):
        table.add_row(name, str(counts.get(name, 0)))
    out.print(table)
    if last is None:
        out.print("last sync: never")
    else:
        stats = last["stats"]
        out.print(
            f"last sync: {last['status']} at {last['finished_at'] or last['started_at']} of {last['source_id']}"
            f" ({stats.get('indexed', 0)} indexed, {stats.get('failed', 0)} failed, {stats.get('chunks', 0)} chunks,"
            f" {stats.get('seconds', '?')} s)",
            highlight=False,
            soft_wrap=True,
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
