"""Pure reconciliation of the ledger with the vector store: what each side says about every document.

The ledger says a document is indexed with N chunks of version V; the store holds points carrying
``source_id``, ``doc_id`` and ``version`` in their payload. Drift is any document where the two disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flows.rag.ledger import INDEXED, PENDING, LedgerDocument

DocKey = tuple[str, str]  # (source_id, doc_id)

# Kinds of drift, and how a repair fixes each: re-ingest the document, or delete its points.
MISSING, WRONG_VERSION, WRONG_COUNT, UNKNOWN = "missing in store", "wrong version", "wrong count", "not in ledger"
REINGEST_KINDS = frozenset({MISSING, WRONG_VERSION, WRONG_COUNT})


@dataclass(frozen=True, slots=True)
class Drift:
    kind: str
    source_id: str
    doc_id: str
    path: str
    ledger: str  # what the ledger says, e.g. "3 chunks of v1"
    store: str  # what the store holds, e.g. "2 points of v1"

    def row(self) -> dict[str, str]:
        """One line of the report: the CLI's table and the ``rag-verify-report`` artifact."""
        return {"drift": self.kind, "source": self.source_id, "document": self.path, "ledger": self.ledger,
                "store": self.store}  # fmt: skip


def tally_points(payloads: Iterable[Mapping[str, object]]) -> dict[DocKey, Counter[str]]:
    """Points per document and version, from each point's payload (``source_id``, ``doc_id``, ``version``)."""
    tally: dict[DocKey, Counter[str]] = {}
    for payload in payloads:
        key = (str(payload.get("source_id")), str(payload.get("doc_id")))
        tally.setdefault(key, Counter())[str(payload.get("version"))] += 1
    return tally


def _describe(versions: Counter[str]) -> str:
    total = sum(versions.values())
    if not total:
        return "no points"
    points = f"{total} point{'s' if total > 1 else ''} of "
    if len(versions) == 1:
        return points + _short(next(iter(versions)))
    return points + ", ".join(f"{_short(v)} ({n})" for v, n in sorted(versions.items()))


def _short(version: str) -> str:
    return version[:12]


def find_drift(
    documents: Iterable[LedgerDocument], stored: Mapping[DocKey, Counter[str]], collection: str
) -> list[Drift]:
    """Every disagreement between the ledger's ``documents`` and the points ``stored`` in ``collection``, sorted by
    source and document. Documents still pending, or indexed on another collection (a model change under way), are
    neither checked nor stray: the next sync settles them."""
    drift: list[Drift] = []
    accounted: set[DocKey] = set()
    not_indexed: dict[DocKey, str] = {}
    for doc in documents:
        key = (doc.source_id, doc.doc_id)
        if doc.status == PENDING or (doc.status == INDEXED and doc.collection != collection):
            accounted.add(key)
            continue
        if doc.status != INDEXED:
            not_indexed[key] = doc.status
            continue
        accounted.add(key)
        versions = stored.get(key, Counter())
        found = sum(versions.values())
        if doc.chunk_count and not found:
            kind = MISSING
        elif any(v != doc.version for v in versions):
            kind = WRONG_VERSION
        elif found != doc.chunk_count:
            kind = WRONG_COUNT
        else:
            continue
        said = f"{doc.chunk_count} chunks of {_short(doc.version)}"
        drift.append(Drift(kind, doc.source_id, doc.doc_id, doc.path, said, _describe(versions)))
    for key, versions in stored.items():
        if key not in accounted:
            said = not_indexed.get(key, "no such document")
            drift.append(Drift(UNKNOWN, key[0], key[1], key[1], said, _describe(versions)))
    return sorted(drift, key=lambda d: (d.source_id, d.doc_id))
