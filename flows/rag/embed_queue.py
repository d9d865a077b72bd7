"""Parsed documents waiting for their vectors, handed to the embed stage a group of chunks at a time.

Smallest remainder first, and a document larger than a group goes in slices: one file of thousands of chunks
never holds back the files parsed after it (their ledger outcomes are written as soon as they are embedded).
Pure logic, for pipeline.py.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from flows.rag.parse import ParsedDocument
from flows.rag.sources.base import DocumentRef


@dataclass(frozen=True, slots=True)
class Slice:
    """Chunks ``start:end`` of one parsed document."""

    ref: DocumentRef
    parsed: ParsedDocument
    start: int
    end: int

    @property
    def last(self) -> bool:
        """The document's final slice: once it is written, the document is complete."""
        return self.end == len(self.parsed.chunks)


class EmbedQueue:
    def __init__(self) -> None:
        self._waiting: list[tuple[DocumentRef, ParsedDocument, int]] = []  # (ref, parsed, first chunk not taken)

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, ref: DocumentRef, parsed: ParsedDocument) -> None:
        self._waiting.append((ref, parsed, 0))

    def discard(self, doc_ids: Collection[str]) -> None:
        """Drop what is left of these documents: one of their chunks failed, so the rest will not be written."""
        self._waiting = [item for item in self._waiting if item[0].doc_id not in doc_ids]

    @property
    def chunks(self) -> int:
        return sum(len(parsed.chunks) - start for _, parsed, start in self._waiting)

    def take(self, budget: int) -> list[Slice]:
        """Up to ``budget`` chunks (at least one document, even one without chunks), smallest remainders first."""
        self._waiting.sort(key=lambda item: len(item[1].chunks) - item[2])
        taken: list[Slice] = []
        while self._waiting and budget > 0:
            ref, parsed, start = self._waiting.pop(0)
            end = min(len(parsed.chunks), start + budget)
            taken.append(Slice(ref, parsed, start, end))
            budget -= end - start
            if end < len(parsed.chunks):
                self._waiting.insert(0, (ref, parsed, end))
        return taken
