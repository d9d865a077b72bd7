"""Ingest one batch of documents: fetch → parse (processes) → embed → upsert → ledger, overlapped.

* fetch threads download (or open) files and hand them to the parser processes;
* the calling thread embeds documents as their parses complete, a group of chunks at a time (it loads the
  model when the first group is ready, so the parsers are already at work while it loads); on a CPU its forward
  pass leaves the parsers still at work their cores. A group is embedded when it is full or when no parse has
  finished for a few seconds, and a large document goes in slices (embed_queue.py), so neither a slow parse nor
  a long embedding holds back the other files' outcomes; forward passes are bounded by padded tokens and halved
  after a GPU out-of-memory error, and a chunk that does not fit even alone fails its document, not the batch;
* one writer thread upserts each group, drops the stale points of the documents it completes, then records
  them indexed.

Order per document is what makes a crash at any instant safe: the ledger says *pending* before any point
is written and *indexed* only after its points of the new version are in and older ones are gone.
A re-run re-does every pending document, and point ids are deterministic, so it converges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from flows.common import progress
from flows.rag.config import RagConfig
from flows.rag.duplicates import DuplicatePlan, Original, key_of, originals, plan_duplicates
from flows.rag.embed import Embedder, forward_threads, too_large_reason
from flows.rag.embed_queue import EmbedQueue, Slice
from flows.rag.ids import point_id
from flows.rag.ledger import FAILED, INDEXED, SKIPPED, DocumentOutcome, RagLedger
from flows.rag.parse import ChunkingOptions, ParsedDocument, ParseProblem, parse_file
from flows.rag.parser_pool import ParserPool, run_with_deadline
from flows.rag.sources.base import DocumentRef, FetchError, Source

if TYPE_CHECKING:
    from flows.rag.store import VectorStore

_GROUP_CHUNKS = 512  # chunks embedded and written together: big enough for full GPU batches
_IDLE_FLUSH_S = 5.0  # no parse finished for this long: embed and record what is waiting instead of filling a group
_POOL_START_S = 60.0  # a fresh parser process imports unstructured before its first file


def files_in_flight(parsers: int) -> int:
    """Files fetched and handed to the parsers at once: a couple per parser, so downloads overlap parsing."""
    return parsers * 2 + 1


@dataclass
class BatchReport:
    outcomes: list[DocumentOutcome] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"embed": 0.0, "write": 0.0, "total": 0.0})

    def summary(self) -> dict[str, Any]:
        count = {INDEXED: 0, SKIPPED: 0, FAILED: 0}
        for outcome in self.outcomes:
            count[outcome.status] += 1
        return {
            "files": len(self.outcomes),
            "indexed": count[INDEXED],
            "skipped": count[SKIPPED],
            "failed": count[FAILED],
            "chunks": sum(o.chunk_count for o in self.outcomes),
            "split_chunks": sum(o.split_chunks for o in self.outcomes),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def refreshable_fields(ref: DocumentRef) -> dict[str, Any]:
    """The payload fields a rename, a move or a sharing change updates in place, without a new version."""
    return {
        "title": ref.name,
        "path": ref.path,
        "modified": ref.modified,
        "readers": list(ref.readers),  # who may see it: search --as filters on it (flows/rag/readers.py)
    }


def document_fields(source_id: str, ref: DocumentRef) -> dict[str, Any]:
    """The payload fields that come from the document, not from a chunk: a copy by checksum (duplicates.py)
    takes the other document's chunks with these of its own."""
    return {
        "source_id": source_id,
        "doc_id": ref.doc_id,
        "version": ref.version,
        "link": ref.link,
        "mime_type": ref.mime_type,
    } | refreshable_fields(ref)


def chunk_payloads(source_id: str, piece: Slice) -> list[dict[str, Any]]:
    fields = document_fields(source_id, piece.ref)
    return [
        {
            "text": chunk.text,
            **fields,
            "page": chunk.page,
            "section": chunk.section,
            "ocr": chunk.ocr,  # the chunk's text was read by OCR (a scanned page or an image)
            "attachment": chunk.attachment,  # the e-mail attachment it came from, within the message's document
            "chunk_index": index,
        }
        for index, chunk in enumerate(piece.parsed.chunks[piece.start : piece.end], start=piece.start)
    ]


def indexed_outcome(ref: DocumentRef, parsed: ParsedDocument) -> DocumentOutcome:
    """Indexed, with what the bounds cut from it (if anything) as its reason."""
    note = "; ".join(parsed.notes) or None
    return DocumentOutcome(ref, INDEXED, note, len(parsed.chunks), parsed.split_chunks)


class BatchIndexer:
    def __init__(
        self,
        source: Source,
        store: VectorStore,
        ledger: RagLedger,
        load_embedder: Callable[[], Embedder],
        parsers: ParserPool,
        config: RagConfig,
        served: VectorStore | None = None,
    ) -> None:
        """``served``: the collection the alias serves during a model migration (RagResources.served_store)."""
        self.source = source
        self.store = store
        self.served = served
        self.ledger = ledger
        self.load_embedder = load_embedder
        self.parsers = parsers
        self.config = config
        self.options = ChunkingOptions(
            model=config.embedding_model,
            max_chars=config.chunk_max_chars,
            new_after_chars=config.chunk_new_after_chars,
            overlap_chars=config.chunk_overlap_chars,
            combine_under_chars=config.chunk_combine_under_chars,
            max_chunks=config.max_chunks_per_file,
            max_run_chars=config.max_run_chars,
            ocr_languages=config.ocr_languages,
        )

    # -- stage 1: fetch + parse, one thread per document in flight ---------------------------------
    def _fetch_and_parse(self, ref: DocumentRef) -> ParsedDocument | DocumentOutcome:
        try:
            with self.source.fetch(ref) as local_path:
                return self._parse_with_restarts(str(local_path), ref)
        except FetchError as exc:
            return DocumentOutcome(ref, FAILED, str(exc))
        except ParseProblem as problem:
            return DocumentOutcome(ref, problem.status, problem.reason)

    def _parse_with_restarts(self, path: str, ref: DocumentRef) -> ParsedDocument:
        name = ref.parse_as
        timeout = self.config.parse_timeout_s
        # The parser process enforces the timeout per file (run_with_deadline). This wait only catches a parser
        # stuck in native code: this file may queue behind every other file in flight, each bounded by the
        # timeout, plus a fresh pool's start.
        hung_after = timeout * (files_in_flight(self.parsers.workers) + 1) + _POOL_START_S
        for attempt in (1, 2):
            future, pool = self.parsers.submit(run_with_deadline, timeout, parse_file, path, name, self.options)
            try:
                return future.result(timeout=hung_after)
            except TimeoutError:
                self.parsers.restart(pool)
                raise ParseProblem(FAILED, f"no parse result after {hung_after:.0f} s: a parser hung") from None
            except BrokenProcessPool:
                # Another file (or this one) crashed its parser: retry once on a fresh pool.
                self.parsers.restart(pool)
                if attempt == 2:
                    raise ParseProblem(FAILED, "the parser process crashed on this file") from None
        raise AssertionError("unreachable")

    # -- stage 3: write, on the single writer thread --------------------------------------------------
    def _write_group(self, group: list[Slice], vectors: Any) -> None:
        started = time.perf_counter()
        source_id = self.source.source_id
        ids: list[str] = []
        payloads: list[dict[str, Any]] = []
        for piece in group:
            ids += [point_id(source_id, piece.ref.doc_id, i) for i in range(piece.start, piece.end)]
            payloads += chunk_payloads(source_id, piece)
        if ids:
            self.store.upsert(ids, vectors, payloads)
        complete = [piece for piece in group if piece.last]  # a document is indexed once all of its points are in
        if complete:
            self.store.delete_stale(source_id, {piece.ref.doc_id: piece.ref.version for piece in complete})
            if self.served is not None:
                # Its served chunks keep their text until the alias swaps, but take who may read them now.
                for piece in complete:
                    self.served.set_document_metadata(source_id, piece.ref.doc_id, refreshable_fields(piece.ref))
            self._record([indexed_outcome(piece.ref, piece.parsed) for piece in complete])
        self.report.seconds["write"] += time.perf_counter() - started

    def _write_problems(self, outcomes: list[DocumentOutcome]) -> None:
        # A document that can no longer be indexed must not keep points of an older version, in either collection.
        for store in (self.store, self.served):
            if store is not None:
                store.delete_documents(self.source.source_id, [o.ref.doc_id for o in outcomes])
        self._record(outcomes)

    def _record(self, outcomes: list[DocumentOutcome]) -> None:
        self.ledger.record_outcomes(self.source.source_id, outcomes, self.config.embedding_model, self.store.collection)
        self.report.outcomes += outcomes
        progress.report("files", len(outcomes))

    # -- orchestration ---------------------------------------------------------------------------------
    def run(self, refs: list[DocumentRef]) -> BatchReport:
        started = time.perf_counter()
        self.report = BatchReport()
        self.ledger.mark_pending(self.source.source_id, refs, self.config.embedding_model, self.store.collection)
        # What the source's listing found not indexable (flows/rag/indexable.py) is recorded, never fetched.
        problems = [DocumentOutcome(ref, SKIPPED, ref.skip_reason) for ref in refs if ref.skip_reason]
        # A copy of content already indexed takes its chunks and vectors: never fetched, parsed or embedded.
        duplicates = self._plan_duplicates([ref for ref in refs if not ref.skip_reason])
        to_parse = duplicates.fetch + [ref for ref, original in duplicates.copies if not self._copy(ref, original)]

        writes: list[Future[None]] = []
        queue = EmbedQueue()
        with (
            ThreadPoolExecutor(files_in_flight(self.parsers.workers), thread_name_prefix="fetch") as fetchers,
            ThreadPoolExecutor(1, thread_name_prefix="write") as writer,
        ):
            if problems:
                writes.append(writer.submit(self._write_problems, problems))
            pending = {fetchers.submit(self._fetch_and_parse, ref): ref for ref in to_parse}
            while pending or queue:
                patience = 0 if queue.chunks >= _GROUP_CHUNKS else _IDLE_FLUSH_S
                done = wait(pending, patience, FIRST_COMPLETED).done if pending else set()
                failed_now: list[DocumentOutcome] = []
                for future in done:
                    ref = pending.pop(future)
                    result = future.result()
                    if isinstance(result, DocumentOutcome):
                        failed_now.append(result)
                    else:
                        queue.add(ref, result)
                if failed_now:
                    writes.append(writer.submit(self._write_problems, failed_now))
                # A full group, or nothing parsed for a while (or nothing left to parse): embed and record.
                if queue and (queue.chunks >= _GROUP_CHUNKS or not done):
                    busy_parsers = min(self.parsers.workers, len(pending))
                    group, vectors, out_of_memory = self._embed(queue.take(_GROUP_CHUNKS), busy_parsers)
                    if out_of_memory:
                        queue.discard({outcome.ref.doc_id for outcome in out_of_memory})
                        writes.append(writer.submit(self._write_problems, out_of_memory))
                    writes.append(writer.submit(self._write_group, group, vectors))
                    self._raise_write_errors(writes)
            for write in writes:
                write.result()  # surfaces a Qdrant or ledger failure as the batch's error
        self._follow(duplicates.followers)
        self.report.seconds["total"] = time.perf_counter() - started
        return self.report

    # -- copies by checksum (duplicates.py) -------------------------------------------------------------
    def _plan_duplicates(self, refs: list[DocumentRef]) -> DuplicatePlan:
        versions = [ref.version for ref in refs if key_of(ref) is not None]
        rows = self.ledger.indexed_with_versions(versions, self.config.embedding_model, self.store.collection)
        return plan_duplicates(refs, originals(rows))

    def _copy(self, ref: DocumentRef, original: Original) -> bool:
        """Write ``original``'s points as ``ref``'s and record it indexed; False (nothing written) when the
        original's points are not all there (it changed or went since the ledger was read): fetch it then."""
        points = self.store.document_points(original.source_id, original.doc_id)
        if len(points) != original.chunk_count:
            return False
        source_id = self.source.source_id
        fields = document_fields(source_id, ref)
        if points:
            ids = [point_id(source_id, ref.doc_id, int(payload["chunk_index"])) for payload, _ in points]
            vectors = np.asarray([vector for _, vector in points], dtype=np.float32)
            self.store.upsert(ids, vectors, [payload | fields for payload, _ in points])
        self.store.delete_stale(source_id, {ref.doc_id: ref.version})
        reason = f"same content as {original.doc_id}: its chunks and vectors reused"
        self._record([DocumentOutcome(ref, INDEXED, reason, original.chunk_count, original.split_chunks)])
        return True

    def _follow(self, followers: dict[str, list[DocumentRef]]) -> None:
        """Copies of a document fetched in this batch, now that it is written: its chunks, or its outcome. A copy
        whose original's points changed meanwhile stays pending, for the next sync."""
        outcomes = {outcome.ref.doc_id: outcome for outcome in self.report.outcomes}
        source_id = self.source.source_id
        for leader_id, copies in followers.items():
            leader = outcomes[leader_id]
            if leader.status != INDEXED:
                reason = f"same content as {leader.ref.path}: {leader.reason}"
                self._write_problems([DocumentOutcome(ref, leader.status, reason) for ref in copies])
                continue
            original = Original(source_id, leader_id, leader.chunk_count, leader.split_chunks)
            for ref in copies:
                self._copy(ref, original)

    def _embed(self, group: list[Slice], busy_parsers: int) -> tuple[list[Slice], Any, list[DocumentOutcome]]:
        """The group's vectors; a document with a chunk that does not fit the GPU's memory even alone fails (and
        leaves the group) instead of failing the batch."""
        embedder = self.load_embedder()
        started = time.perf_counter()
        token_ids = [chunk.token_ids for piece in group for chunk in piece.parsed.chunks[piece.start : piece.end]]
        threads = forward_threads(embedder.cpu_threads, busy_parsers)
        config = self.config
        embedded = embedder.embed_chunks(token_ids, config.embed_batch_size, threads, config.embed_batch_tokens)
        self.report.seconds["embed"] += time.perf_counter() - started
        if not embedded.failed:
            return group, embedded.vectors, []
        owner = [piece.ref.doc_id for piece in group for _ in range(piece.start, piece.end)]  # per row
        reasons: dict[str, str] = {}
        for row in embedded.failed:
            reasons.setdefault(owner[row], too_large_reason(len(token_ids[row])))
        kept_rows = [row for row, doc_id in enumerate(owner) if doc_id not in reasons]
        failed = [DocumentOutcome(p.ref, FAILED, reasons[p.ref.doc_id]) for p in group if p.ref.doc_id in reasons]
        return [p for p in group if p.ref.doc_id not in reasons], embedded.vectors[kept_rows], failed

    @staticmethod
    def _raise_write_errors(writes: list[Future[None]]) -> None:
        for write in writes:
            if write.done():
                write.result()
