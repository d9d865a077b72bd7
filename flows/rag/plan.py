"""Pure sync planning: a source's change set against the ledger → what to ingest, refresh and remove."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flows.rag.indexable import decided_at_listing
from flows.rag.ledger import DELETED, FAILED, INDEXED, PENDING, SKIPPED, LedgerEntry
from flows.rag.sources.base import ChangeSet, DocumentRef, KnownDocument


@dataclass(slots=True)
class SyncPlan:
    new: list[DocumentRef] = field(default_factory=list)
    changed: list[DocumentRef] = field(default_factory=list)
    refreshed: list[DocumentRef] = field(default_factory=list)  # same content, new name/path/mtime/readers
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    kept_unseen: int = 0  # known documents the listing could not see: neither removed nor re-checked

    @property
    def to_ingest(self) -> list[DocumentRef]:
        return self.new + self.changed

    @property
    def has_work(self) -> bool:
        return bool(self.new or self.changed or self.refreshed or self.removed)


def known_documents(entries: Mapping[str, LedgerEntry]) -> dict[str, KnownDocument]:
    """The part of the ledger a source may use to skip work (e.g. re-hashing unchanged files)."""
    return {
        doc_id: KnownDocument(version=e.version, size=e.size, mtime_ns=e.mtime_ns, modified=e.modified)
        for doc_id, e in entries.items()
        if e.status != DELETED
    }


def plan_sync(changes: ChangeSet, entries: Mapping[str, LedgerEntry], model: str) -> SyncPlan:
    """Decide each document's fate.

    * new: not in the ledger, or deleted before;
    * changed: another version, an unfinished (pending) ingest, or indexed with another model;
    * refreshed: same version but another name, path, size, mtime or readers (a sharing change): metadata only,
      no re-embedding;
    * removed: gone from a complete listing, or reported removed by an incremental feed; a document the
      listing could not see (under an unreadable folder, itself unreadable) is kept as it is, never removed.
    Failed and skipped documents are retried when their version changes, or when the listing's verdict on
    them changed (verdict_changed).
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
            or verdict_changed(entry, ref)
        ):
            plan.changed.append(ref)
        elif (entry.name, entry.path, entry.size, entry.mtime_ns, entry.readers) != (
            ref.name,
            ref.path,
            ref.size,
            ref.mtime_ns,
            ref.readers,
        ):
            plan.refreshed.append(ref)
        else:
            plan.unchanged += 1

    if changes.complete:
        gone = (doc_id for doc_id in entries if doc_id not in listed)
    else:
        gone = (doc_id for doc_id in dict.fromkeys(changes.removed) if doc_id not in listed)
    unseen = changes.unseen
    for doc_id in gone:
        if doc_id not in entries or entries[doc_id].status == DELETED:
            continue
        if _under_any(doc_id, unseen):
            plan.kept_unseen += 1
        else:
            plan.removed.append(doc_id)
    return plan


def verdict_changed(entry: LedgerEntry, ref: DocumentRef) -> bool:
    """Whether the listing now judges an unchanged version otherwise than the ledger records: skipped at listing
    and now indexable (a format the parser reads since, a higher size limit) or skipped for another listing
    reason, or indexed or failed and now not indexable (a lower limit, a narrower allow-list). A skip found by
    reading the file (encrypted, empty) stands until the file changes."""
    if entry.status == SKIPPED:
        return entry.reason != ref.skip_reason and (ref.skip_reason is not None or decided_at_listing(entry.reason))
    return entry.status in (INDEXED, FAILED) and ref.skip_reason is not None


def _under_any(doc_id: str, prefixes: list[str]) -> bool:
    """Whether ``doc_id`` is one of ``prefixes`` or lies under one ("" is the root, above everything)."""
    return any(not p or doc_id == p or doc_id.startswith(p + "/") for p in prefixes)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    model: str
    warning: str | None = None
    migration: str | None = None  # the model the alias is being moved to, kept in the ledger until published
    notice: str | None = None  # one line for the log: a pending migration continued or cancelled


def choose_model(
    explicit: str | None, published: str | None, node_model: str, alias: str, migrating: str | None = None
) -> ModelChoice:
    """The one model a sync plans, embeds and publishes with, decided before any work.

    A model given to the run wins (a model change is always explicit): one other than the served model becomes the
    alias's pending migration, and the served one cancels a pending migration. Else the pending migration's model,
    so that scheduled syncs carry on a migration an explicit run left unfinished instead of undoing it. Else the
    model ``alias`` serves per the ledger, so a node whose own setting differs neither re-embeds everything nor
    mixes models; else, on the first sync, the node's own setting. A node setting that disagrees with the served
    model is warned about."""
    if explicit:
        if migrating and explicit == published:
            return ModelChoice(
                explicit, notice=f"cancelled the migration of {alias!r} to {migrating!r}: it stays on {published!r}"
            )
        return ModelChoice(explicit, migration=explicit if published not in (None, explicit) else None)
    if migrating:
        return ModelChoice(
            migrating,
            migration=migrating,
            notice=f"continuing the migration of {alias!r} from {published!r} to {migrating!r} that an explicit run"
            f" started; to cancel it, run with config embedding_model={published!r}",
        )
    if published is None or published == node_model:
        return ModelChoice(node_model)
    return ModelChoice(
        published,
        f"this node's SWARM_EMBEDDING_MODEL is {node_model!r} but {alias!r} is served by {published!r}:"
        f" syncing with {published!r}; to migrate, run with config embedding_model={node_model!r}",
    )
