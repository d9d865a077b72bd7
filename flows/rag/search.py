"""The one way a reader searches the store: ``swarm search``, research's local context, and the evaluation of a
query set (``swarm eval``, rag-eval) that measures it.

Opens the run's resources, embeds the queries with the model the alias serves (``use_served_model``) and asks the
store for each query's closest chunks, in the config's ``search_mode``. No Prefect: ``swarm search`` needs none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from flows.common.errors import ConfigError
from flows.rag.config import RagConfig, load_config
from flows.rag.embed import embed_queries
from flows.rag.evaluation import EvalQuery, QueryScore, parse_queries, score_query, search_depth
from flows.rag.resources import open_resources
from flows.rag.store import Hit, Must

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
    resources = open_resources(load_config(config))
    resources.use_served_model()
    mode = resources.config.search_mode
    store = resources.store
    if mode == "hybrid" and "search_mode" not in resources.config.explicit and not store.serves_hybrid():
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
