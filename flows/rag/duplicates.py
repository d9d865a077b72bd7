"""Identical copies by checksum: a file whose content is already indexed takes that document's chunks and vectors
(no download, no parse, no embedding), with its own id, path, link and readers in the payload.

Two files hold the same content when their versions are checksums (Drive's ``md5Checksum``, "md5:<hex>"; a local
file's sha256) and equal, with the same size; they chunk the same when the parser picks the same format for them,
which it does by MIME type and extension, so those must match too. MD5 collisions can be crafted, but only between
two files the crafter writes both of, and a copy takes the other's text, never its readers.

Each copy's points are its own (ids from its doc_id), so removing one copy leaves the other's. Pure logic for
pipeline.py: which documents of a batch to fetch, which to copy from a document indexed before, and which to copy
from one fetched in the same batch once it is written; and for a paced sync's admission (flows/rag/pacing.py),
which documents of its plan cost no download.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from flows.rag.sources.base import DocumentRef

_SHA256 = re.compile(r"[0-9a-f]{64}")

ContentKey = tuple[str, int | None, str, str]  # version, size, MIME type, extension


@dataclass(frozen=True, slots=True)
class Original:
    """An indexed document whose points a copy reuses."""

    source_id: str
    doc_id: str
    chunk_count: int
    split_chunks: int


def content_key(version: str, size: int | None, mime_type: str | None, name: str) -> ContentKey | None:
    """What two documents must share to share their chunks; None when the version is not a checksum (a Google
    Doc's modification stamp, a revision id, a local file's size and mtime)."""
    if not (version.startswith("md5:") or _SHA256.fullmatch(version)):
        return None
    return version, size, mime_type or "", PurePosixPath(name).suffix.lower()


def key_of(ref: DocumentRef) -> ContentKey | None:
    return content_key(ref.version, ref.size, ref.mime_type, ref.name)


def originals(rows: Iterable[Sequence[Any]]) -> dict[ContentKey, Original]:
    """The ledger's indexed documents (RagLedger.indexed_with_versions rows) by content; the first of each kind."""
    found: dict[ContentKey, Original] = {}
    for source_id, doc_id, version, size, mime_type, name, chunks, split in rows:
        key = content_key(version, size, mime_type, name)
        if key is not None:
            found.setdefault(key, Original(source_id, doc_id, int(chunks), int(split)))
    return found


class Contents:
    """The contents met so far, documents taken in order: what each one copies, if anything. The one rule for a
    batch (plan_duplicates) and for a paced sync's admission, which prices a copy at nothing (flows/rag/pacing.py)."""

    def __init__(self, indexed: Mapping[ContentKey, Original]) -> None:
        self.indexed = indexed
        self._first: dict[ContentKey, DocumentRef] = {}

    def original_of(self, ref: DocumentRef) -> Original | DocumentRef | None:
        """The indexed document ``ref`` copies, else the first document of the same content met before it, else
        None (the same again when asked again)."""
        key = key_of(ref)
        if key is None:
            return None
        if key in self.indexed:
            return self.indexed[key]
        first = self._first.setdefault(key, ref)
        return None if first is ref else first

    def is_copy(self, ref: DocumentRef) -> bool:
        return self.original_of(ref) is not None


@dataclass
class DuplicatePlan:
    fetch: list[DocumentRef] = field(default_factory=list)  # downloaded, parsed and embedded
    copies: list[tuple[DocumentRef, Original]] = field(default_factory=list)  # of a document indexed before
    followers: dict[str, list[DocumentRef]] = field(default_factory=dict)  # fetched doc_id -> its copies here


def plan_duplicates(refs: Sequence[DocumentRef], indexed: Mapping[ContentKey, Original]) -> DuplicatePlan:
    """Split a batch's documents: a copy of an indexed document is copied; of several new copies of one content,
    the first is fetched and the others follow it."""
    plan = DuplicatePlan()
    contents = Contents(indexed)
    for ref in refs:
        original = contents.original_of(ref)
        if original is None:
            plan.fetch.append(ref)
        elif isinstance(original, Original):
            plan.copies.append((ref, original))
        else:
            plan.followers.setdefault(original.doc_id, []).append(ref)
    return plan
