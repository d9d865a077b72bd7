"""rag-search: the store's closest chunks to one or more queries, for the Prefect UI and other flows.

Pool: thanos (deployment ``rag-search/thanos``), where the store can be opened (embedded Qdrant admits one
process). Searches as every reader does (flows/rag/search.py: the model the alias serves, the config's
``search_mode``), as ``reader`` when one is named (only what that reader may read, flows/rag/readers.py), and
publishes the hits as the ``rag-search`` markdown artifact. Reads only; safe to re-run.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.rag.config import RagOptions
from flows.rag.readers import reader_filter
from flows.rag.search import HitView, search_chunks, views


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_hits(results: dict[str, list[HitView]], mode: str, reader: str | None) -> str:
    """One markdown table per query: rank, score, document (linked when the source gives a link), snippet."""
    lines = [f"# rag-search ({mode} search{f', as {reader}' if reader else ''})", ""]
    for query, rows in results.items():
        lines += [f"## {_cell(query)}", ""]
        if not rows:
            lines += ["No results." if not reader else f"No results that {reader} may read.", ""]
            continue
        lines += ["| # | score | document | text |", "|---:|---:|---|---|"]
        for row in rows:
            name = f"{row.title} ({row.where})"
            document = f"[{_cell(name)}]({row.link})" if row.link else _cell(name)
            lines.append(f"| {row.rank} | {row.score:.3f} | {document} | {_cell(row.snippet)} |")
        lines.append("")
    return "\n".join(lines)


@flow(name="rag-search")
def rag_search(
    queries: Annotated[list[str], Field(min_length=1, max_length=100)],
    k: Annotated[int, Field(ge=1, le=100)] = 5,
    reader: str | None = None,
    groups: list[str] | None = None,
    config: RagOptions | None = None,
) -> dict[str, Any]:
    """Find each query's closest chunks; returns {"mode", "results": {query: [hit, ...]}} and publishes them as
    the ``rag-search`` artifact.

    Args:
        queries: What to look for, one search per entry.
        k: Chunks per query.
        reader: Search as this reader (an email): only the chunks whose document it may read.
        groups: The reader's groups (with reader); Drive does not tell group membership.
        config: Settings of this run (search_mode among them); an empty field is the node's own, else the default.
    """
    must = reader_filter(reader, groups or ())
    searched = search_chunks(config, queries, k, must)
    results = {query: views(hits) for query, hits in zip(queries, searched.hits, strict=True)}
    create_markdown_artifact(
        render_hits(results, searched.mode, reader), key="rag-search", description=f"{len(queries)} queries"
    )
    as_dicts = {query: [row._asdict() for row in rows] for query, rows in results.items()}
    return {"mode": searched.mode, "results": as_dicts}
