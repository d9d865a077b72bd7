"""The project's own Qdrant collection as local context for gpt-researcher ("hybrid" research).

The chunks closest to a query are found here, with the project's embedder and vector store, and written
as plain-text files that gpt-researcher (in its own venv, without our model) loads from ``DOC_PATH``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.rag.search import search_chunks
from flows.rag.store import Must


def retrieve_local_context(
    queries: list[str], rag_config: dict[str, Any] | None, k: int, must: Must = ()
) -> dict[str, list[dict]]:
    """query -> up to ``k`` payloads of the closest chunks (text, title, path) that match ``must`` (a reader's
    filter on ``readers``, flows/rag/readers.py), found by flows/rag/search.py. Raises SwarmError when the ledger
    or Qdrant cannot be opened."""
    found = search_chunks(rag_config, queries, k, must).hits
    return {query: [hit.payload or {} for hit in hits] for query, hits in zip(queries, found, strict=True)}


def write_context_files(chunks: list[dict[str, Any]], folder: Path) -> Path | None:
    """One .txt file per chunk (gpt-researcher reads .txt without parsing); None when there is nothing."""
    if not chunks:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.txt"):
        old.unlink()
    for rank, chunk in enumerate(chunks, start=1):
        where = chunk.get("link") or chunk.get("path") or "?"
        header = f"Title: {chunk.get('title', '?')}\nSource: {where}\n\n"
        (folder / f"{rank:02d}.txt").write_text(header + str(chunk.get("text", "")), encoding="utf-8")
    return folder
