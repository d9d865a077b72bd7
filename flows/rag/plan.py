"""Pure sync planning: a source's change set against the ledger → what to ingest, refresh and remove."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flows.rag.sources.base import ChangeSet, DocumentRef, KnownDocument

# Ledger statuses of a document.
PENDING, INDEXED, SKIPPED, FAILED, DELETED = "pending", "indexed", "skipped", "failed", "deleted"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    doc_id: str
    name: str
    path: str
    version: str
    status: str
    embedding_model: str | None
    size: int | None
    mtime_ns: int | None


@dataclass(slots=True)
class SyncPlan:
    new: list[DocumentRef] = field(default_factory=list)
    changed: list[DocumentRef] = field(default_factory=list)
    refreshed: list[DocumentRef] = field(default_factory=list)  # same content, new name/path/mtime
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def to_ingest(self) -> list[DocumentRef]:
        return self.new + self.changed

    @property
    def has_work(self) -> bool:
        return bool(self.new or self.changed or self.refreshed or self.removed)


def known_documents(entries: Mapping[str, LedgerEntry]) -> dict[str, KnownDocument]:
    """The part of the ledger a source may use to skip work (e.g. re-hashing unchanged files)."""
    return {
        doc_id: KnownDocument(version=e.version, size=e.size, mtime_ns=e.mtime_ns)
        for doc_id, e in entries.items()
        if e.status != DELETED
    }


def plan_sync(changes: ChangeSet, entries: Mapping[str, LedgerEntry], model: str) -> SyncPlan:
    """Decide each document's fate.

    * new: not in the ledger, or deleted before;
    * changed: another version, an unfinished (pending) ingest, or indexed with another model;
    * refreshed: same version but another name, path, size or mtime: metadata only, no re-embedding;
    * removed: gone from a complete listing, or reported removed by an incremental feed.
    Failed and skipped documents are retried only when their version changes.
    """
    plan = SyncPlan()
    listed: dict[str, DocumentRef] = {ref.doc_id: ref for ref in changes.documents}
    for doc_id, ref in listed.items():
        entry = entries.get(doc_id)
        if entry is None or entry.status == DELETED:
            plan.new.append(ref)
        elif (
            entry.version != ref.version
            or entry.status == PENDING
            or (entry.status == INDEXED and entry.embedding_model != model)
        ):
            plan.changed.append(ref)
        elif (entry.name, entry.path, entry.size, entry.mtime_ns) != (
            ref.name,
            ref.path,
            ref.size,
            ref.mtime_ns,
        ):
            plan.refreshed.append(ref)
        else:
            plan.unchanged += 1

    if changes.complete:
        gone = (doc_id for doc_id in entries if doc_id not in listed)
    else:
        gone = (doc_id for doc_id in dict.fromkeys(changes.removed) if doc_id not in listed)
    plan.removed = [d for d in gone if d in entries and entries[d].status != DELETED]
    return plan
