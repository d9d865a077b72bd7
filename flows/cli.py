"""``swarm``: the command line over the flows (ingest a folder, search it, show the ledger)."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

# Quiet Prefect's console handler before Prefect is imported, not its loggers: the run is still recorded with
# full logs (a logger level of WARNING would have dropped its INFO lines before they reached the API).
if "-v" not in sys.argv and "--verbose" not in sys.argv:
    # A failed run is reported here as one line; Prefect's report of it (a traceback) stays in the run's logs.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
# No usage telemetry from the Prefect servers or the client (DO_NOT_TRACK: Prefect's SDK analytics, which in a
# terminal also print a notice): this machine may have no route out.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# With SWARM_PREFECT_SERVER=temporary (or where the local server fails), Prefect starts a temporary server whose
# first start on a fresh machine migrates its database; on a small CPU that outlasts Prefect's 20 s default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flows.common import progress
from flows.common.errors import ConfigError, ServiceUnavailable, SwarmError
from flows.common.faults import as_swarm_error
from flows.common.process_group import lead_own_group
from flows.rag.report import SUMMARY_FIELDS

if TYPE_CHECKING:
    from flows.common.local_server import Layout


def _exit_now(code: int) -> NoReturn:
    """Exit without tearing the interpreter down: freeing the objects of Prefect's import took 3-5 s of a no-op's
    wall time on the busy 2-core box (docs/benchmarks.md). The atexit handlers still run: Prefect's last logs and
    events, the parser pool, the embedded store's close. Where a thread of ours still works, the usual exit
    waits for it."""
    if any(not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to show
            stream.flush()
    os._exit(code)


class _Swarm(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as done:
            if done.code is not None and not isinstance(done.code, int):
                raise  # a message to print: the usual exit does it
            _exit_now(done.code or 0)


app = _Swarm(add_completion=False, no_args_is_help=True, help="Swarm cluster pipelines.")
out = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option(help="Home of the embedded ledger and Qdrant [SWARM_DATA_DIR].")]
LedgerUrl = Annotated[str | None, typer.Option(help="postgresql://... or sqlite:///... [SWARM_LEDGER_URL].")]
QdrantUrl = Annotated[str | None, typer.Option(help="Qdrant server URL; default embedded [SWARM_QDRANT_URL].")]
QdrantPath = Annotated[Path | None, typer.Option(help="Embedded Qdrant folder [SWARM_QDRANT_PATH].")]
Collection = Annotated[str | None, typer.Option(help="Collection alias [SWARM_COLLECTION].")]
Model = Annotated[str | None, typer.Option(help="Embedding model [SWARM_EMBEDDING_MODEL].")]


def _overrides(**values: Any) -> dict[str, Any]:
    """Flags that were given; the rest comes from SWARM_* variables or defaults (SWARM_QDRANT_API_KEY among
    them: read by the run itself, never copied into its parameters)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items() if v is not None}


def _fail(error: SwarmError) -> None:
    from flows.common.redact import redact  # the last guard: a library's reason may quote a password

    line = " ".join(redact(str(error)).split())  # one line, also where a library's reason spans several
    err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(2 if isinstance(error, ConfigError) else 1)


def _written_folders(config: dict[str, Any]) -> list[Path]:
    """Where a run writes: the embedded Qdrant, a SQLite ledger, the data folder."""
    from flows.rag.config import load_config

    try:
        rag = load_config(config)
    except SwarmError:
        return []
    ledger = rag.resolved_ledger_url
    sqlite = [Path(ledger.removeprefix("sqlite:///")).parent] if ledger.startswith("sqlite:///") else []
    return [rag.resolved_qdrant_path, *sqlite, rag.data_dir]


@contextmanager
def _one_line_errors(verbose: bool = False, config: dict[str, Any] | None = None) -> Iterator[None]:
    """Any failure as one line: ours as they are, a full disk, a read-only folder or a lost service by its cause,
    anything else by its type (its traceback with --verbose)."""
    try:
        yield
    except SwarmError as error:
        _fail(error)
    except Exception as exc:
        fault = as_swarm_error(exc, _written_folders(config or {}))
        if fault is None and verbose:
            raise
        _fail(fault or SwarmError(f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)"))


def _server_layout(data_dir: Path | None) -> Layout:
    """The local server's files under the data folder a command's flags and SWARM_DATA_DIR name."""
    from flows.common.local_server import Layout
    from flows.rag.config import load_config

    return Layout.under(load_config(_overrides(data_dir=data_dir)).data_dir)


def _idle_minutes() -> float:
    raw = os.environ.get("SWARM_SERVER_IDLE_MINUTES", "60")
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not minutes >= 0:
        raise ConfigError(f"SWARM_SERVER_IDLE_MINUTES must be a number of minutes >= 0 (0: never), not {raw!r}")
    return minutes


def _use_prefect_api(data_dir: Path | None) -> bool:
    """Point this command's flow runs at an API: the one Prefect's settings name (PREFECT_API_URL, e.g. the
    cluster's), else the data folder's local server, started on first use (flows/common/local_server.py), else,
    with SWARM_PREFECT_SERVER=temporary or where the local one cannot start, Prefect's temporary one. True when
    it is the local server."""
    with _one_line_errors():
        mode = os.environ.get("SWARM_PREFECT_SERVER", "local")
        if mode not in ("local", "temporary"):
            raise ConfigError(f"SWARM_PREFECT_SERVER must be local or temporary, not {mode!r}")
        from prefect.context import refresh_global_settings_context
        from prefect.settings import get_current_settings

        from flows.common import local_server

        if get_current_settings().api.url or mode == "temporary":
            return False
        try:
            server = local_server.ensure(_server_layout(data_dir), _idle_minutes())
        except (ServiceUnavailable, OSError) as error:  # OSError: e.g. a read-only data folder
            err.print(f"warning: {error}; this run uses a temporary Prefect server", highlight=False, soft_wrap=True)
            return False
    os.environ.update(PREFECT_API_URL=server.url, PREFECT_API_AUTH_STRING=server.auth)  # env only, never argv
    refresh_global_settings_context()  # Prefect read its settings at import, before the URL was known
    return True


@contextmanager
def _run_settings(local_server: bool) -> Iterator[None]:
    """Around a command's flow runs: on the data folder's own server, no flow-run heartbeats. That server runs no
    automations (the zombie-run one is what reads them), and ending a run waits for its heartbeat thread, which
    sleeps in 1 s steps: up to 1 s per run. A copy of the settings, not a rebuild (Prefect's temporary_settings
    validates them all again: ~0.1 s)."""
    if not local_server:
        yield
        return
    from prefect.context import SettingsContext

    current = SettingsContext.get()
    assert current is not None  # Prefect sets its global context at import
    flows = current.settings.flows.model_copy(update={"heartbeat_frequency": None})
    with SettingsContext(profile=current.profile, settings=current.settings.model_copy(update={"flows": flows})):
        yield


server_app = typer.Typer(
    no_args_is_help=True,
    help="The local Prefect server that ingest and verify start for themselves when PREFECT_API_URL is unset.",
)
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(data_dir: DataDir = None) -> None:
    """Start the data folder's server now, or show the one running (ingest and verify start it when needed)."""
    from flows.common import local_server

    with _one_line_errors():
        layout = _server_layout(data_dir)
        server = local_server.ensure(layout, _idle_minutes())
    out.print(
        f"running at {server.url} (PREFECT_HOME {layout.home}, auth string in {layout.state})",
        highlight=False,
        soft_wrap=True,
    )


@server_app.command("status")
def server_status(data_dir: DataDir = None) -> None:
    """Whether the data folder's server runs, and where; exit 1 when it does not."""
    from flows.common import local_server

    with _one_line_errors():
        layout = _server_layout(data_dir)
        server = local_server.running(layout)
    if server is None:
        out.print(f"not running (PREFECT_HOME {layout.home})", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print(
        f"running at {server.url} (pid {server.pid}, PREFECT_HOME {layout.home})", highlight=False, soft_wrap=True
    )


@server_app.command("stop")
def server_stop(data_dir: DataDir = None) -> None:
    """Stop the data folder's server (a run using it loses its API); the next ingest starts a new one."""
    from flows.common import local_server

    with _one_line_errors():
        layout = _server_layout(data_dir)
        server = local_server.stop(layout)
    line = f"stopped the server at {server.url}" if server else f"not running (PREFECT_HOME {layout.home})"
    out.print(line, highlight=False, soft_wrap=True)


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
    lead_own_group()  # the temporary Prefect server and the parsers die with this command, however it ends
    own_server = _use_prefect_api(data_dir)
    from flows.rag.config import load_config
    from flows.rag.resources import open_resources
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

    with _one_line_errors(verbose, config):
        # Check flags, folder and ledger before a flow run starts: a mistake is one line, not a run. Not the store:
        # a sync with nothing to do never opens it, and one with work reports an unreachable store the same way.
        resources = open_resources(load_config(config))
        spec = LocalFolderSpec(path=str(path.expanduser().resolve()))
        resources.source(spec)
        with bar, progress.listening(on_progress), _run_settings(own_server):
            stats = rag_sync(spec, config)
    table = Table(title=f"Synced {path}", show_header=False)
    for key, label in SUMMARY_FIELDS:
        table.add_row(label, str(stats.get(key, 0)))
    out.print(table)
    for doc_path, status, reason in stats.get("problems", []):
        out.print(f"  {status:8} {doc_path}: {reason}", highlight=False, soft_wrap=True)
    for warning in stats.get("warnings", []):
        err.print(f"warning: {warning}", highlight=False, soft_wrap=True)


Mode = Annotated[
    str | None, typer.Option("--mode", help="dense (query vector) or hybrid (with a text match) [SWARM_SEARCH_MODE].")
]


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many chunks to show.")] = 5,
    mode: Mode = None,
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
    qdrant_url: QdrantUrl = None,
    qdrant_path: QdrantPath = None,
    collection: Collection = None,
    model: Model = None,
    reader: Annotated[
        str | None, typer.Option("--as", help="Show only what this reader (an email) may read in the source.")
    ] = None,
    groups: Annotated[str | None, typer.Option(help="The reader's groups, comma-separated (with --as).")] = None,
) -> None:
    """Show the chunks closest to QUERY, with score, document and a snippet."""
    from flows.rag.readers import reader_filter
    from flows.rag.search import search_chunks, views

    with _one_line_errors():
        must = reader_filter(reader, (groups or "").split(","))
        config = _overrides(data_dir=data_dir, ledger_url=ledger_url, qdrant_url=qdrant_url, qdrant_path=qdrant_path,
                            collection=collection, embedding_model=model, search_mode=mode)  # fmt: skip
        [hits] = search_chunks(config, [query], k, must).hits
    if not hits:
        out.print(
            f"no results that {reader} may read" if reader else "no results (is anything indexed? try `swarm status`)"
        )
        return
    for view in views(hits):
        out.print(f"{view.rank}. [{view.score:.3f}] {view.title} ({view.where})", highlight=False, soft_wrap=True)
        out.print(f"   {view.snippet}", highlight=False, soft_wrap=True)


@app.command("search-server")
def search_server(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1 to answer on.")] = 8765,
    idle_release: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds after the last search to release the store (an ingest can then open it)."),
    ] = 30.0,
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
    qdrant_url: QdrantUrl = None,
    qdrant_path: QdrantPath = None,
    collection: Collection = None,
) -> None:
    """Keep the model and the store open and answer this node's searches (swarm search, research's local context,
    rag-search) where SWARM_SEARCH_SERVER names this server, e.g. http://127.0.0.1:8765. Stop with Ctrl-C."""
    from flows.rag.config import load_config
    from flows.rag.search_server import serve

    with _one_line_errors():
        config = load_config(_overrides(data_dir=data_dir, ledger_url=ledger_url, qdrant_url=qdrant_url,
                                        qdrant_path=qdrant_path, collection=collection))  # fmt: skip
        serve(config, port, idle_release)


@app.command("eval")
def evaluate(
    queries: Annotated[
        Path,
        typer.Argument(
            help='JSON Lines, one {"query": "...", "relevant": ["path", ...]} per line; the first malformed line'
            " stops the evaluation, naming its number."
        ),
    ],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Documents counted by recall@k.")] = 10,
    mode: Mode = None,
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
    qdrant_url: QdrantUrl = None,
    qdrant_path: QdrantPath = None,
    collection: Collection = None,
    model: Model = None,
) -> None:
    """Score search on a query set: recall@k, reciprocal rank and nDCG@10 per query, and their means.

    A relevant path matches a hit's document path on whole components from the end (library/os.html matches
    html/library/os.html); a document counts once, at its best chunk's rank (flows/rag/evaluation.py)."""
    from flows.rag.config import load_config
    from flows.rag.evaluation import report_rows
    from flows.rag.search import evaluate as score_queries
    from flows.rag.search import read_query_set

    with _one_line_errors():
        query_set = read_query_set(queries)
        config = load_config(
            _overrides(data_dir=data_dir, ledger_url=ledger_url, qdrant_url=qdrant_url, qdrant_path=qdrant_path,
                       collection=collection, embedding_model=model, search_mode=mode)
        )  # fmt: skip
        mode_run, scores = score_queries(config, query_set, k)
        rows = report_rows(scores, k)
    table = Table(*rows[0], title=f"Retrieval of {queries} ({mode_run} search)")
    for row in rows[:-1]:
        table.add_row(*row.values())
    table.add_section()
    table.add_row(*rows[-1].values())
    out.print(table)


@app.command()
def status(
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
) -> None:
    """Documents in the ledger by status, and the last sync."""
    from flows.common.db import Database
    from flows.rag.config import load_config
    from flows.rag.ledger import RagLedger

    with _one_line_errors():
        config = load_config(_overrides(data_dir=data_dir, ledger_url=ledger_url))
        ledger = RagLedger(Database(config.resolved_ledger_url))
        counts = ledger.status_counts()
        last = ledger.last_run()
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


@app.command()
def verify(
    path: Annotated[Path | None, typer.Argument(help="Only this indexed folder; default: every source.")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Re-index what the store lacks, delete strays.")] = False,
    data_dir: DataDir = None,
    ledger_url: LedgerUrl = None,
    qdrant_url: QdrantUrl = None,
    qdrant_path: QdrantPath = None,
    collection: Collection = None,
    model: Model = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Compare the ledger with the vector store per document (run after every Qdrant restore)."""
    lead_own_group()
    own_server = _use_prefect_api(data_dir)
    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.verify import rag_verify

    config = _overrides(data_dir=data_dir, ledger_url=ledger_url, qdrant_url=qdrant_url, qdrant_path=qdrant_path,
                        collection=collection, embedding_model=model)  # fmt: skip
    with _one_line_errors(verbose, config), _run_settings(own_server):
        spec = LocalFolderSpec(path=str(path.expanduser().resolve())) if path else None
        result = rag_verify(config, spec, repair)
    drift = result["drift"]
    out.print(
        f"{result['documents']} documents in the ledger, {result['points']} points in {result['collection']}:"
        f" {f'{len(drift)} drifted' if drift else 'no drift'}",
        highlight=False,
        soft_wrap=True,
    )
    if drift:
        table = Table(*drift[0])
        for row in drift:
            table.add_row(*row.values())
        out.print(table)
    if repaired := result.get("repaired"):
        out.print(
            f"repaired: {repaired['marked_for_reingest']} marked for re-ingest"
            + (f" and re-indexed ({result['sync']['indexed']} indexed)" if "sync" in result else " (at the next sync)")
            + f", {repaired['stray_documents_deleted']} unknown documents' points deleted",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def doctor(
    node: Annotated[str | None, typer.Option(help="Pool whose deployments to check [SWARM_NODE, host name].")] = None,
    min_free_gib: Annotated[float, typer.Option(help="Free disk wanted under each folder written.")] = 10.0,
    min_gpu_free_mib: Annotated[float, typer.Option(help="Free memory wanted on some GPU.")] = 1024.0,
) -> None:
    """Check that this node has what its deployments need (the preflight flow's checks); exit 1 on a failure."""
    from flows.ops.preflight import Limits, preflight_report, require_node
    from flows.ops.preflight_checks import failed, format_lines, summary

    with _one_line_errors():
        name = require_node(node)
        results = preflight_report(name, Limits(min_free_gib=min_free_gib, min_gpu_free_mib=min_gpu_free_mib))
    for line in format_lines(results):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(summary(name, results), highlight=False)
    if failed(results):
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
