"""Retrieval quality of a set of queries with known relevant documents: recall@k, MRR and nDCG@10.

Pure: a query set's lines in, scores and their rendering out; searching is flows/rag/search.py's job.

A query set is JSON Lines, one ``{"query": "...", "relevant": ["path", ...]}`` per line (blank lines are
skipped); the first malformed line stops the whole evaluation, naming its number, since averages over the
remaining lines would silently measure another set.

Relevance is per document. A relevant entry names a document by its path, matched against each hit's payload
``path`` (the source's own path, relative to a local source's folder) on whole path components, from the end:
``library/os.html`` matches ``library/os.html``, ``html/library/os.html`` and ``/usr/share/doc/python3.11/html/
library/os.html`` in either role, but not ``library/pos.html``; so a set can name files relative to any folder
above the one ingested, or below it. A document is ranked where its first chunk is: its later chunks in the
ranking are dropped, and the documents after them move up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean

from flows.common.errors import ConfigError

NDCG_AT = 10


@dataclass(frozen=True)
class EvalQuery:
    query: str
    relevant: tuple[str, ...]


@dataclass(frozen=True)
class QueryScore:
    query: str
    recall: float  # of the relevant documents, the share among the first k documents ranked
    reciprocal_rank: float  # 1 / the rank of the first relevant document; 0 when none is ranked
    ndcg: float  # binary relevance, over the first NDCG_AT documents
    first_rank: int | None  # the rank of the first relevant document


def parse_queries(lines: Iterable[str], name: str) -> list[EvalQuery]:
    """The query set in ``lines`` (of the file ``name``); ConfigError naming the first bad line."""
    queries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name} line {number}: not JSON ({exc.msg})") from None
        query = entry.get("query") if isinstance(entry, dict) else None
        relevant = entry.get("relevant") if isinstance(entry, dict) else None
        if not isinstance(query, str) or not query.strip():
            raise ConfigError(f'{name} line {number}: "query" must be a non-empty string')
        if not isinstance(relevant, list) or not relevant or not all(isinstance(p, str) and p for p in relevant):
            raise ConfigError(f'{name} line {number}: "relevant" must be a non-empty list of paths')
        queries.append(EvalQuery(query, tuple(relevant)))
    if not queries:
        raise ConfigError(f"{name} holds no queries")
    return queries


def search_depth(k: int) -> int:
    """Chunks to retrieve per query: enough for recall@k and nDCG@10 (fewer documents when some repeat)."""
    return max(k, NDCG_AT)


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def same_document(path: str, entry: str) -> bool:
    """Whether a hit's ``path`` is the document a relevant ``entry`` names: the shorter one's components end the
    longer one's."""
    hit, named = _parts(path), _parts(entry)
    n = min(len(hit), len(named))
    return n > 0 and hit[-n:] == named[-n:]


def document_ranking(relevant: Sequence[str], ranked_paths: Sequence[str]) -> list[str]:
    """The documents of a hit list, each once, at its first chunk's place: a relevant one as its entry (so two
    paths that both match one entry count once), any other as its path."""
    ranking: list[str] = []
    for path in ranked_paths:
        key = next((entry for entry in relevant if same_document(path, entry)), path)
        if key not in ranking:
            ranking.append(key)
    return ranking


def score_query(query: EvalQuery, ranked_paths: Sequence[str], k: int) -> QueryScore:
    """The scores of one query from its hits' payload paths, best hit first."""
    relevant = set(query.relevant)
    ranks = [rank for rank, doc in enumerate(document_ranking(query.relevant, ranked_paths), 1) if doc in relevant]
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), NDCG_AT) + 1))
    return QueryScore(
        query=query.query,
        recall=sum(rank <= k for rank in ranks) / len(relevant),
        reciprocal_rank=1 / ranks[0] if ranks else 0.0,
        ndcg=sum(1 / math.log2(rank + 1) for rank in ranks if rank <= NDCG_AT) / ideal,
        first_rank=ranks[0] if ranks else None,
    )


def averages(scores: Sequence[QueryScore]) -> dict[str, float]:
    """Each metric's mean over the queries: recall@k, MRR, nDCG@10."""
    return {
        "recall": fmean(s.recall for s in scores),
        "mrr": fmean(s.reciprocal_rank for s in scores),
        "ndcg": fmean(s.ndcg for s in scores),
    }


def report_rows(scores: Sequence[QueryScore], k: int) -> list[dict[str, str]]:
    """One row per query, then the means: what the CLI's table and the rag-eval artifact show."""
    recall, rr, ndcg = f"recall@{k}", "RR", f"nDCG@{NDCG_AT}"
    rows = [
        {"query": s.query, recall: f"{s.recall:.3f}", rr: f"{s.reciprocal_rank:.3f}", ndcg: f"{s.ndcg:.3f}",
         "first relevant": str(s.first_rank or "-")}
        for s in scores
    ]  # fmt: skip
    mean = averages(scores)
    rows.append(
        {"query": f"mean of {len(scores)} queries", recall: f"{mean['recall']:.3f}", rr: f"MRR {mean['mrr']:.3f}",
         ndcg: f"{mean['ndcg']:.3f}", "first relevant": ""}
    )  # fmt: skip
    return rows


def render_report(rows: Sequence[dict[str, str]], title: str) -> str:
    """``report_rows`` as a markdown table under ``title``."""
    header = list(rows[0])
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row[h].replace("|", "/") for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"
