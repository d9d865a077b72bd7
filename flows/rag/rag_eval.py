"""rag-eval: how well the store finds a query set's relevant documents (recall@k, MRR, nDCG@10).

Pool: thanos (deployment ``rag-eval/thanos``), where the store can be opened (embedded Qdrant admits one process).
Reads the query set (JSON Lines, flows/rag/evaluation.py) on the node, searches as readers do (flows/rag/search.py,
in the config's ``search_mode``: run it once per mode to compare them), publishes the ``rag-eval`` markdown artifact
and records the run and its means in the ledger's rag_runs (flow ``rag-eval``). Writes nothing else; safe to re-run.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.rag.config import RagOptions, load_config
from flows.rag.evaluation import averages, render_report, report_rows
from flows.rag.resources import open_resources
from flows.rag.search import evaluate, read_query_set


@flow(name="rag-eval")
def rag_eval(
    queries: str, k: Annotated[int, Field(ge=1, le=100)] = 10, config: RagOptions | None = None
) -> dict[str, Any]:
    """Score the store on a query set, publish the scores per query and their means (artifact ``rag-eval``) and
    return the means (``per_query`` too).

    Args:
        queries: JSON Lines file on the node, one {"query": ..., "relevant": [paths]} per line.
        k: Documents counted by recall@k.
        config: Settings of this run (search_mode among them); an empty field is the node's own, else the default.
    """
    started = time.perf_counter()
    rag = load_config(config)
    query_set = read_query_set(Path(queries))  # a malformed line fails here, before a run is recorded
    ledger = open_resources(rag).ledger
    run_id = ledger.start_run("rag-eval", None)
    status = "failed"
    stats: dict[str, Any] = {"queries_file": queries, "queries": len(query_set), "k": k, "mode": rag.search_mode}
    try:
        stats["mode"], scores = evaluate(rag, query_set, k)
        stats |= averages(scores) | {"seconds": round(time.perf_counter() - started, 2)}
        status = "completed"
    finally:
        ledger.finish_run(run_id, status, stats)
    title = f"rag-eval of {queries} ({stats['mode']}, k={k})"
    create_markdown_artifact(render_report(report_rows(scores, k), title), key="rag-eval", description=title)
    return stats | {"per_query": [asdict(score) for score in scores]}  # the ledger keeps the means only
