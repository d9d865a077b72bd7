"""rag-verify: the ledger against the store it should describe, and the repair through the normal sync."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import qdrant_edge as qe
from prefect.artifacts import Artifact

from flows.rag.config import load_config
from flows.rag.drift import MISSING, UNKNOWN, WRONG_COUNT, WRONG_VERSION
from flows.rag.ids import point_id
from flows.rag.resources import open_resources
from flows.rag.sources.local import LocalFolderSpec
from flows.rag.sync import rag_sync
from flows.rag.verify import rag_verify
from testkit.documents import write_document
from tests.flows.rag_checks import assert_consistent, config_for

SUBJECTS = {"otters.md": "Otters float on their backs", "tides.txt": "The moon pulls the tides", "owls.html": "Owls"}


def indexed(tmp_path: Path) -> tuple[LocalFolderSpec, str, str]:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in SUBJECTS.items():
        write_document(docs / name, f"{text}, says this short document about {name.split('.')[0]}.")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spec = LocalFolderSpec(path=str(docs))
    assert rag_sync(spec, config_for(tmp_path, ledger_url))["indexed"] == len(SUBJECTS)
    return spec, ledger_url, f"local:{docs.resolve()}"


def drift_of(result: dict) -> dict[str, str]:
    return {row["document"]: row["drift"] for row in result["drift"]}


def test_an_empty_store_is_reported_missing_and_repaired_through_the_sync(tmp_path: Path) -> None:
    spec, ledger_url, _ = indexed(tmp_path)
    empty = config_for(tmp_path, ledger_url, qdrant_path=str(tmp_path / "restored-qdrant"))
    # What the issue saw: a sync against an empty store with the same ledger writes nothing.
    assert rag_sync(spec, empty)["chunks"] == 0

    found = rag_verify(empty)
    assert drift_of(found) == dict.fromkeys(SUBJECTS, MISSING) and found["points"] == 0
    artifact = Artifact.get("rag-verify-report")
    assert artifact is not None and all(name in str(artifact.data) for name in SUBJECTS)

    repaired = rag_verify(empty, spec, repair=True)
    assert repaired["repaired"] == {"marked_for_reingest": 3, "stray_documents_deleted": 0}
    assert repaired["sync"]["indexed"] == len(SUBJECTS)
    assert rag_verify(empty)["drift"] == []
    store = open_resources(load_config(empty)).store
    assert_consistent(store, ledger_url)


def test_strays_are_deleted_and_a_wrong_count_or_version_is_re_indexed(tmp_path: Path) -> None:
    spec, ledger_url, source_id = indexed(tmp_path)
    config = config_for(tmp_path, ledger_url)
    store = open_resources(load_config(config)).store
    stray = {"source_id": source_id, "doc_id": "ghost.md", "version": "v0", "text": "gone", "chunk_index": 0}
    store.upsert([point_id(source_id, "ghost.md", 0)], np.full((1, store.dim), 0.1), [stray])
    shard = store.folder.shard(store.collection)  # the embedded store, changed behind the ledger's back
    shard.update(qe.UpdateOperation.delete_points([point_id(source_id, "otters.md", 0)]))
    shard.update(qe.UpdateOperation.set_payload([point_id(source_id, "tides.txt", 0)], {"version": "old"}))

    found = rag_verify(config, spec)
    assert drift_of(found) == {"ghost.md": UNKNOWN, "otters.md": WRONG_COUNT, "tides.txt": WRONG_VERSION}
    assert {row["store"] for row in found["drift"]} >= {"1 point of v0"}

    repaired = rag_verify(config, spec, repair=True)
    assert repaired["repaired"] == {"marked_for_reingest": 2, "stray_documents_deleted": 1}
    assert rag_verify(config)["drift"] == []
    points = assert_consistent(store, ledger_url)
    assert "ghost.md" not in {p["doc_id"] for p in points}


def test_repair_without_a_source_leaves_the_re_index_to_the_next_sync(tmp_path: Path) -> None:
    spec, ledger_url, _ = indexed(tmp_path)
    empty = config_for(tmp_path, ledger_url, qdrant_path=str(tmp_path / "other-qdrant"))
    assert "sync" not in rag_verify(empty, repair=True)
    assert rag_sync(spec, empty)["changed"] == len(SUBJECTS)
    assert rag_verify(empty)["drift"] == []
