"""research: gpt-researcher reports for one query or a list, through the LiteLLM gateway and SearXNG.

Pool: thanos (SearXNG and gpt-researcher live there). gpt-researcher runs in its own venv
(``SWARM_GPTR_PYTHON``; it pins numpy<2.3, the project numpy 2.4), one child process per query, at most
``concurrency`` at a time. Its LLM and embeddings go to the OpenAI-compatible gateway, its web retriever
is SearXNG, and tiktoken's downloading cost estimate is switched off, so it needs no other network. The closest
chunks of the project's own Qdrant collection are added as local documents (gpt-researcher's hybrid mode).

Writes each report as ``<output_dir>/<run>-<slug>.md``, a markdown artifact, and a row in the ledger
(``research_reports``: report, sources, cost, duration, or the failure reason; ``research_report_usage``: the
tokens and cost the gateway reported for the query's calls, per model, NULL cost where it reported none, never
an estimate). A failed query is recorded and the others go on; the run fails only when every query failed.
Re-running runs the queries again (reports are new research, not a cache).
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks.llm import OpenAICompatibleEndpoint
from blocks.postgres import PostgresLedger
from blocks.searxng import SearxngServer
from flows.common.blocks import data_dir, resolve_block, resolve_ledger_url
from flows.common.errors import SwarmError
from flows.rag.readers import allowed_readers
from flows.research.ledger import open_ledger, record_result
from flows.research.local_context import retrieve_local_context, write_context_files
from flows.research.rendering import report_markdown, summary_markdown
from flows.research.runs import QueryResult, ResearchSettings, check_interpreter, normalise_queries, run_query, slugify

# gpt-researcher 0.15.1's ReportType values.
ReportType = Literal[
    "research_report",
    "resource_report",
    "outline_report",
    "custom_report",
    "detailed_report",
    "subtopic_report",
    "deep",
]


@flow(name="research", log_prints=True)
def research(
    queries: list[str] | str,
    llm_base_url: str = "http://127.0.0.1:4000/v1",
    llm_api_key_env: str | None = "LITELLM_API_KEY",
    fast_llm: str = "default",
    smart_llm: str | None = None,
    strategic_llm: str | None = None,
    embedding_model: str = "embeddings",
    searx_url: str = "http://127.0.0.1:8080",
    concurrency: int = 2,
    report_type: ReportType = "research_report",
    max_iterations: int = 3,
    max_subtopics: int = 3,
    total_words: int = 1200,
    timeout_s: float = 1800.0,
    gptr_python: str | None = None,
    output_dir: str | None = None,
    ledger_url: str | None = None,
    local_context_k: int = 6,
    local_context_reader: str | None = None,
    local_context_groups: list[str] | None = None,
    rag_config: dict[str, Any] | None = None,
    llm_block: OpenAICompatibleEndpoint | str | None = None,
    searxng_block: SearxngServer | str | None = None,
    ledger_block: PostgresLedger | str | None = None,
) -> dict[str, Any]:
    """Research each query; returns per-query status and file, and the run's cost (None: unknown). Model names are
    the gateway's.

    Saved blocks win over the plain parameters they stand for.

    Args:
        queries: One query, or a list of them; each becomes its own report.
        llm_base_url: OpenAI-compatible base URL of the LiteLLM gateway.
        llm_api_key_env: Name of the node's environment variable holding the gateway key (never the key itself).
        fast_llm: Gateway model name for gpt-researcher's fast LLM.
        smart_llm: Gateway model name for the smart LLM; empty: the fast one.
        strategic_llm: Gateway model name for the strategic LLM; empty: the smart one.
        embedding_model: Gateway model name of the embeddings gpt-researcher uses.
        searx_url: Base URL of SearXNG (its JSON API is gpt-researcher's web retriever).
        concurrency: Queries researched at once (one gpt-researcher process each).
        report_type: gpt-researcher's kind of report.
        max_iterations: gpt-researcher's research iterations per query.
        max_subtopics: Subtopics of a detailed report.
        total_words: Target length of each report, in words.
        timeout_s: A query still running after this many seconds fails (the others go on).
        gptr_python: Interpreter of gpt-researcher's own venv; empty: SWARM_GPTR_PYTHON.
        output_dir: Folder of the report files; empty: <data dir>/research.
        ledger_url: Ledger database URL without a password; empty: the node's ledger (block, SWARM_LEDGER_URL or
            the embedded SQLite file).
        local_context_k: Chunks of the project's own collection added to each query's web research; 0: web only.
        local_context_reader: Only chunks this reader (an email) may read in their source go into the local
            context (the readers of Drive's sharing); empty: every chunk.
        local_context_groups: That reader's groups (emails; a bare name is in the reader's domain).
        rag_config: RAG settings for that local context (RagConfig fields); empty: the node's SWARM_* settings.
        llm_block: Saved OpenAICompatibleEndpoint block (UI: pick one; CLI/prefect.yaml: its name): base URL,
            key, chat model as fast_llm and its embedding model; wins over the plain LLM parameters.
        searxng_block: Saved SearxngServer block (or its name); wins over searx_url.
        ledger_block: Saved PostgresLedger block (or its name); wins over ledger_url.
    """
    logger = get_run_logger()
    todo = normalise_queries(queries)
    api_key = os.environ.get(llm_api_key_env) if llm_api_key_env else None
    if llm := resolve_block(OpenAICompatibleEndpoint, llm_block, "llm_block"):
        llm_base_url, api_key, fast_llm = llm.base_url, llm.api_key_value(), llm.chat_model
        embedding_model = llm.embedding_model or embedding_model
    if searx := resolve_block(SearxngServer, searxng_block, "searxng_block"):
        searx_url = searx.url
    ledger = resolve_ledger_url(ledger_block, ledger_url)
    python = check_interpreter(gptr_python or os.environ.get("SWARM_GPTR_PYTHON"))
    settings = ResearchSettings(
        llm_base_url=llm_base_url,
        searx_url=searx_url,
        fast_llm=fast_llm,
        smart_llm=smart_llm,
        strategic_llm=strategic_llm,
        embedding_model=embedding_model,
        llm_api_key=api_key,
        report_type=report_type,
        max_iterations=max_iterations,
        max_subtopics=max_subtopics,
        total_words=total_words,
        timeout_s=timeout_s,
    )
    db = open_ledger(ledger)
    out_dir = Path(output_dir) if output_dir else data_dir() / "research"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"research-{uuid.uuid4().hex[:10]}"
    local: dict[str, list[dict]] = {}
    reader = local_context_reader
    must = [("readers", allowed_readers(reader, local_context_groups or []))] if reader else []  # a bad one fails
    if local_context_k > 0:
        try:
            local = retrieve_local_context(todo, rag_config, local_context_k, must)
        except SwarmError as exc:  # the web part can still answer; say why the local part is missing
            logger.warning("no local context from the project's collection: %s", exc)

    def one(query: str) -> QueryResult:
        workdir = out_dir / ".work" / slugify(query)
        doc_path = write_context_files(local.get(query, []), workdir / "local-context")
        result = run_query(python, query, settings, workdir, doc_path)
        if result.ok:
            path = out_dir / f"{run_id}-{slugify(query)}.md"
            path.write_text(report_markdown(result), encoding="utf-8")
            result.report_path = str(path)
            logger.info("%r: report %s (%d sources)", query, path, len(result.sources))
        else:
            logger.error("%r failed: %s", query, result.error)
        record_result(db, run_id, result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo)))) as pool:
        results = list(pool.map(one, todo))

    for r in results:
        if r.ok:
            create_markdown_artifact(report_markdown(r), key="research-report", description=r.query[:200])
    create_markdown_artifact(summary_markdown(run_id, results), key="research-summary", description=run_id)
    costs = [r.cost_usd for r in results]
    summary = {
        "run_id": run_id,
        "ok": sum(r.ok for r in results),
        "failed": sum(not r.ok for r in results),
        "cost_usd": None if None in costs else sum(c for c in costs if c is not None),  # None: unknown
        "reports": [
            {"query": r.query, "ok": r.ok, "path": r.report_path, "error": r.error, "report_id": r.report_id}
            for r in results
        ],
    }
    if summary["ok"] == 0:
        raise SwarmError(f"every research query failed; first reason: {results[0].error}")
    return summary
