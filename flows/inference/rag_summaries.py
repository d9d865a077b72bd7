"""rag-summaries: oracle hands the summaries of newly indexed documents to starlord's batch-inference.

Pool: oracle (schedule). Reads the RAG ledger (indexed documents and their versions) and the store's
payloads (which versions already carry a summary, and the start of each document's text), writes one batch
input file into ``batch_dir``, starts ``batch-inference`` on starlord through ``run_deployment`` and waits
for it, then writes each summary into its document's Qdrant payload (``summary``, ``summary_version``,
``summary_model``). The GPU slot is held by the batch-inference run on starlord, never here.

``batch_dir`` must be one folder that both nodes mount under the same path and list in
``SWARM_BATCH_ROOTS``: oracle writes the input there and reads the output from there.
Safe to re-run: documents already summarised for their version are not sent again; the files are named
by their content, so a re-run after a crash finds the same output, and the child resumes it and sends
again only its failed lines.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common.atomic_file import write_atomically
from flows.common.errors import SwarmError
from flows.inference.paths import batch_roots, confine
from flows.inference.summaries import (
    STATE_FIELDS,
    TEXT_FIELDS,
    Answer,
    batch_lines,
    batch_name,
    document_texts,
    needing_summary,
    read_answers,
)
from flows.rag.config import load_config
from flows.rag.ledger import INDEXED
from flows.rag.resources import RagResources, open_resources


def apply_answers(services: RagResources, answers: list[Answer]) -> tuple[int, int, list[str]]:
    """Write each summary whose document is still at its version; returns (applied, stale, errors)."""
    current = {(d.source_id, d.doc_id): d.version for d in services.ledger.documents() if d.status == INDEXED}
    applied, stale, errors = 0, 0, []
    for a in answers:
        if a.summary is None:
            errors.append(f"{a.source_id}/{a.doc_id}: {a.error}")
        elif current.get((a.source_id, a.doc_id)) != a.version:
            stale += 1  # changed or removed while the batch ran: the next run summarises its new version
        else:
            metadata = {"summary": a.summary, "summary_version": a.version, "summary_model": a.model}
            services.store.set_document_metadata(a.source_id, a.doc_id, metadata)
            applied += 1
    return applied, stale, errors


@flow(name="rag-summaries", log_prints=True)
def rag_summaries(
    batch_dir: str,
    deployment: str = "batch-inference/manual",
    model: str | None = None,
    max_documents: int = 200,
    max_chars: int = 6000,
    max_tokens: int = 256,
) -> dict[str, Any]:
    """Summarise the newly indexed documents on starlord and store the summaries in their payloads.

    Args:
        batch_dir: Folder oracle and starlord both mount under this path and list in SWARM_BATCH_ROOTS.
        deployment: The batch-inference deployment that runs the batch on starlord.
        model: Model to summarise with; empty: the batch-inference deployment's default.
        max_documents: Documents per run at most; the rest wait for the next run.
        max_chars: Characters of each document's start that go into its prompt.
        max_tokens: Longest summary, in tokens.
    """
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    folder = confine(batch_dir, batch_roots(), "batch_dir")
    services = open_resources(load_config())
    indexed = {(d.source_id, d.doc_id): d.version for d in services.ledger.documents() if d.status == INDEXED}
    # Two scans keep memory to max_documents' text: which documents need a summary, then only their chunks.
    chosen = needing_summary(indexed, services.store.payloads(STATE_FIELDS), max_documents)
    docs = document_texts(chosen, services.store.payloads(TEXT_FIELDS), max_chars) if chosen else []
    logger.info("%d indexed documents, %d to summarise", len(indexed), len(docs))
    stats: dict[str, Any] = {"indexed": len(indexed), "sent": len(docs), "applied": 0, "stale": 0, "failed": 0}
    if not docs:
        return stats
    lines = batch_lines(docs, max_tokens, model)
    name = batch_name(lines)
    folder.mkdir(parents=True, exist_ok=True)
    inp, out = folder / f"summaries-{name}.jsonl", folder / f"summaries-{name}.out.jsonl"
    if not inp.exists():  # a re-run after a crash keeps the input the output belongs to
        write_atomically(inp, "".join(line + "\n" for line in lines))  # starlord never reads half a file
    parameters: dict[str, Any] = {"input_path": str(inp), "output_path": str(out), "retry_failed": True}
    if model:
        parameters["model"] = model
    child = run_deployment(deployment, parameters=parameters, timeout=None, as_subflow=True)
    state = child.state
    if state is None or not state.is_completed():
        why = f"{state.name}: {state.message}" if state else "no state"
        raise SwarmError(f"{deployment} run {child.name} ended {why}; re-run to resume it")
    with out.open(encoding="utf-8") as fh:
        answers = read_answers(fh)
    applied, stale, errors = apply_answers(services, answers)
    for error in errors:
        logger.warning("no summary for %s", error)
    stats |= {"applied": applied, "stale": stale, "failed": len(errors), "batch_run": child.name}
    logger.info("%d summaries applied, %d stale, %d failed (batch %s)", applied, stale, len(errors), child.name)
    inp.unlink()
    out.unlink()
    create_markdown_artifact(
        "\n".join(
            [
                f"# Summaries `{name}`",
                "",
                f"Batch run **{child.name}** on `{deployment}`.",
                "",
                "| | |",
                "|---|---|",
                *[f"| {k} | {stats[k]} |" for k in ("indexed", "sent", "applied", "stale", "failed")],
            ]
        )
        + "\n",
        key="rag-summaries",
        description=f"{name}: {applied} applied, {len(errors)} failed",
    )
    return stats
