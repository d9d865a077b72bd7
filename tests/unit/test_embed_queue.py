"""The embed stage's queue: smallest remainders first, a large document in slices (flows/rag/embed_queue.py)."""

from __future__ import annotations

from flows.rag.embed_queue import EmbedQueue
from flows.rag.parse import Chunk, ParsedDocument
from flows.rag.sources.base import DocumentRef


def _document(name: str, chunks: int) -> tuple[DocumentRef, ParsedDocument]:
    ref = DocumentRef(name, name, name, None, "v1", 1, None)
    parsed = ParsedDocument([Chunk(f"{name} {i}", [101, i, 102], None, None) for i in range(chunks)], 0, 0)
    return ref, parsed


def _taken(queue: EmbedQueue, budget: int) -> list[tuple[str, int, int, bool]]:
    return [(piece.ref.doc_id, piece.start, piece.end, piece.last) for piece in queue.take(budget)]


def test_a_large_document_goes_in_slices_and_never_holds_back_smaller_ones_parsed_after_it() -> None:
    queue = EmbedQueue()
    queue.add(*_document("huge.csv", 1200))
    queue.add(*_document("a.md", 3))
    assert _taken(queue, 512) == [("a.md", 0, 3, True), ("huge.csv", 0, 509, False)]
    queue.add(*_document("b.md", 5))  # parsed while the first slice was embedded
    assert queue.chunks == 1200 - 509 + 5
    assert _taken(queue, 512) == [("b.md", 0, 5, True), ("huge.csv", 509, 1016, False)]
    assert _taken(queue, 512) == [("huge.csv", 1016, 1200, True)]
    assert not queue


def test_a_document_without_chunks_is_still_taken_and_completes() -> None:
    queue = EmbedQueue()
    queue.add(*_document("blank.md", 0))
    queue.add(*_document("c.md", 2))
    assert _taken(queue, 1) == [("blank.md", 0, 0, True), ("c.md", 0, 1, False)]
    assert _taken(queue, 1) == [("c.md", 1, 2, True)]
    assert not queue


def test_a_failed_document_is_discarded_with_what_is_left_of_it() -> None:
    queue = EmbedQueue()
    queue.add(*_document("big.csv", 10))
    queue.add(*_document("d.md", 2))
    assert _taken(queue, 6) == [("d.md", 0, 2, True), ("big.csv", 0, 4, False)]
    queue.discard({"big.csv"})
    assert not queue and queue.chunks == 0
