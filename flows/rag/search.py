"""The one way a reader searches the store: ``swarm search``, research's local context, the rag-search flow, and
the evaluation of a query set (``swarm eval``, rag-eval) that measures it.

Opens the run's resources, embeds the queries with the model the alias serves (``use_served_model``) and asks the
store for each query's closest chunks, in the config's ``search_mode``. Where the node runs a warm search server
(``search_server``, flows/rag/search_server.py), the same search runs there, in a process that keeps the model and
the store open; a server that is down or serves another store leaves the search to this process, with a warning.
No Prefect: ``swarm search`` needs none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from flows.common.blocks import block_name
from flows.common.errors import ConfigError
from flows.rag.config import RagConfig, load_config
from flows.rag.evaluation import EvalQuery, QueryScore, parse_queries, score_query, search_depth
from flows.rag.store import Hit, Must

if TYPE_CHECKING:
    from flows.rag.resources import RagResources

log = logging.getLogger(__name__)


class Searched(NamedTuple):
    mode: str  # the mode that ran: the default, hybrid, runs dense on a collection made before hybrid search
    hits: list[list[Hit]]  # per query, in the order of the queries


def search_chunks(
    config: RagConfig | dict[str, Any] | None, queries: Sequence[str], k: int, must: Must = ()
) -> Searched:
    """Up to ``k`` hits per query, in the order of ``queries``, among the chunks that match ``must`` (a reader's
    filter on ``readers``, flows/rag/readers.py). Raises SwarmError when the ledger or Qdrant cannot be opened.
    The queries are embedded as embed_queries decides: on the CPU unless the device is cuda, then holding the
    node's GPU slot."""
    config = load_config(config)
    if config.search_server:
        from flows.rag.search_server import ServerUnavailable, ask_server

        try:
            return ask_server(config, queries, k, must)
        except ServerUnavailable as exc:
            log.warning("search server %s: %s; searching in this process", config.search_server, exc)
    from flows.rag.resources import open_resources  # the engines and the model: only where the search runs

    resources = open_resources(config)
    resources.use_served_model()
    return search_with(resources, queries, k, must)


def store_identity(config: RagConfig) -> str:
    """The store and alias a search reads, from the settings alone: a warm server answers only a client whose
    settings name the one it holds."""
    where = block_name(config.qdrant_block) if config.qdrant_block else None
    where = where or config.qdrant_url or str(config.resolved_qdrant_path.resolve())
    return f"{where}#{config.collection}"


def search_with(
    resources: RagResources, queries: Sequence[str], k: int, must: Must = (), mode: str | None = None
) -> Searched:
    """``search_chunks`` on resources already open, their model the served one (``use_served_model``); ``mode``
    asks for a search mode by name, as an explicit ``search_mode`` does."""
    from flows.rag.embed import embed_queries

    by_name = mode is not None or "search_mode" in resources.config.explicit
    mode = mode or resources.config.search_mode
    store = resources.store
    if mode == "hybrid" and not by_name and not store.serves_hybrid():
        # The default meets a collection made before hybrid search: it still answers, by vector. Asked for by
        # name (--mode, a run's config), hybrid is refused there in one line instead (VectorStore.search).
        log.warning(
            "%s has no text vectors (made before hybrid search): searching by vector alone (docs/store.md,"
            " 'Hybrid search')",
            store.alias,
        )
        mode = "dense"
    vectors = embed_queries(resources.config, queries)
    hits = [
        store.search(vector, k, must=must, text=query, mode=mode)
        for query, vector in zip(queries, vectors, strict=True)
    ]
    return Searched(mode, hits)


class HitView(NamedTuple):
    """A hit as a reader sees it: CLI lines and the rag-search flow's artifact and result."""

    rank: int
    score: float
    title: str
    where: str  # the document's path, and the page where it has pages
    link: str | None
    snippet: str  # the chunk's text on one line, cut to SNIPPET_CHARS


SNIPPET_CHARS = 200


def views(hits: Sequence[Hit]) -> list[HitView]:
    rows = []
    for rank, hit in enumerate(hits, start=1):
        payload = hit.payload or {}
        where = str(payload.get("path", "?")) + (f" p.{payload['page']}" if payload.get("page") else "")
        snippet = " ".join(str(payload.get("text", "")).split())[:SNIPPET_CHARS]
        rows.append(HitView(rank, hit.score, str(payload.get("title", "?")), where, payload.get("link"), snippet))
    return rows


def read_query_set(path: Path) -> list[EvalQuery]:
    """The query set in the JSON Lines file ``path`` (flows/rag/evaluation.py); one ConfigError when it cannot be
    read or a line is malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the query set {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_queries(text.splitlines(), str(path))


def evaluate(
    config: RagConfig | dict[str, Any] | None, queries: Sequence[EvalQuery], k: int
) -> tuple[str, list[QueryScore]]:
    """The search mode that ran and each query's scores against the store, searched as readers search it
    (``search_chunks``)."""
    mode, found = search_chunks(config, [q.query for q in queries], search_depth(k))
    scores = [
        score_query(query, [str(hit.payload.get("path", "")) for hit in hits], k)
        for query, hits in zip(queries, found, strict=True)
    ]
    return mode, scores
