"""The source interface every document source implements (local folder, Google Drive, ...).

A source answers two questions: *what changed since this cursor* and *give me this document's bytes*.
The RAG flows only ever talk to this interface, so a new source needs no change in them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """Everything known about one document without reading its content."""

    doc_id: str  # stable within the source: a relative path, a Drive file id
    name: str  # file name or title, shown to users
    path: str  # human-readable location: relative path, Drive path or web link
    mime_type: str | None
    version: str  # changes whenever the content changes: content hash, md5Checksum, revision id
    size: int | None  # bytes; None when the source cannot tell (Google-native files)
    modified: str | None  # ISO-8601 UTC
    mtime_ns: int | None = None  # local files only: lets a re-walk skip re-hashing unchanged files
    # The name the parser picks the format by, when it differs from ``name``: a Drive export ("Notes" ->
    # "Notes.docx") or a Drive file named without its type's extension ("Q3 report" as a PDF).
    parse_name: str | None = None
    link: str | None = None  # where a reader opens the document (Drive's web view), shown with search hits
    # Why it will not be indexed, decided by the source while listing (flows/rag/indexable.py): never fetched.
    skip_reason: str | None = None
    # Who may read it (flows/rag/readers.py): a Drive file's permissions; a source without any (a local folder)
    # leaves it readable by whoever may query the collection.
    readers: tuple[str, ...] = ("anyone",)

    @property
    def parse_as(self) -> str:
        return self.parse_name or self.name


@dataclass(frozen=True, slots=True)
class KnownDocument:
    """What the ledger remembers of a document, as far as a source needs it to skip work."""

    version: str
    size: int | None
    mtime_ns: int | None
    modified: str | None = None  # the source's own modification time, as last recorded (Drive's modifiedTime)


@dataclass(frozen=True, slots=True)
class ListingProblem:
    """An entry the source did not list, with the one-line reason shown in the sync's report.

    ``unseen=True``: it could not be read (a folder or file that cannot be opened or stat'ed, a symlink loop), so
    what lies at or under ``path`` is unknown and keeps its state. ``unseen=False``: it was seen and is not a
    document (a named pipe, a device, a link leaving the folder)."""

    path: str  # a doc_id or a folder's doc_id prefix ("" for the root)
    reason: str
    unseen: bool


@dataclass(slots=True)
class ChangeSet:
    """A source's answer to "what changed since ``cursor``".

    ``complete=True``: ``documents`` is the full listing, and anything known but absent was removed, except what
    lies under an unseen problem's path (the listing could not see it, so it is not evidence of removal).
    ``complete=False``: an incremental feed: ``documents`` were added or changed, ``removed`` are gone.
    ``next_cursor`` is stored by the sync once every change in this set has been applied.
    """

    documents: list[DocumentRef]
    removed: list[str] = field(default_factory=list)
    complete: bool = True
    next_cursor: str | None = None
    problems: list[ListingProblem] = field(default_factory=list)

    @property
    def unseen(self) -> list[str]:
        return [p.path for p in self.problems if p.unseen]


@runtime_checkable
class Source(Protocol):
    """A place documents come from."""

    @property
    def source_id(self) -> str:
        """Stable identity of this source (part of every point id), e.g. ``local:/srv/docs``."""
        ...

    def changes(self, cursor: str | None, known: Mapping[str, KnownDocument]) -> ChangeSet:
        """What changed since ``cursor`` (None: everything). ``known`` is the ledger's view. Each listed document
        carries its ``skip_reason`` from flows.rag.indexable.skip_reason (the pipeline fetches none that has one)."""
        ...

    def fetch(self, ref: DocumentRef) -> AbstractContextManager[Path]:
        """The document's bytes as a local file, valid inside the ``with`` block."""
        ...


class FetchError(Exception):
    """One document could not be read; the message is the one-line reason stored in the ledger."""


def iter_batches(items: list[DocumentRef], size: int) -> Iterator[list[DocumentRef]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
