"""Identical copies in Drive (same md5Checksum) are downloaded and embedded once; each copy keeps its own path,
link and readers, and removing one leaves the other (flows/rag/duplicates.py, through rag-sync)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.rag.config import load_config
from flows.rag.embed import Embedder
from flows.rag.resources import open_resources
from flows.rag.sources.gdrive import GoogleDriveSpec
from flows.rag.sync import rag_sync
from testkit.documents import TOPICS, write_document
from testkit.gdrive_server import serve
from tests.flows.rag_checks import assert_consistent, config_for, ledger_rows


def test_copies_by_checksum_reuse_the_vectors_and_keep_their_own_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list[int] = []  # chunks per embed call
    original_embed = Embedder.embed_chunks

    def counting_embed(self: Embedder, token_ids: Any, *args: Any) -> Any:
        embedded.append(len(token_ids))
        return original_embed(self, token_ids, *args)

    monkeypatch.setattr(Embedder, "embed_chunks", counting_embed)
    report = tmp_path / "llamas.md"
    write_document(report, TOPICS["llamas.md"][0])
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = config_for(tmp_path, ledger, parse_workers=1)
    with serve() as (url, drive, _):
        team = drive.folder("Team", None)
        archive = drive.folder("Archive", team)
        first = drive.add("llamas.md", team, "text/markdown", report.read_bytes())
        second = drive.add("llamas.md", archive, "text/markdown", report.read_bytes())
        drive.share(first, "user", "ann@example.com")
        drive.share(second, "user", "bob@example.com")
        spec = GoogleDriveSpec(folder_ids=[team], api_endpoint=url)

        # Both new in one batch: one download, one embedding, two documents.
        result = rag_sync(spec, config)
        assert result["indexed"] == 2
        [(fetched, _)] = drive.downloads
        copy = second if fetched == first else first
        chunks = sum(embedded)
        assert chunks > 0

        # A third copy later: copied from the indexed one, nothing fetched or embedded.
        third = drive.add("llamas (1).md", team, "text/markdown", report.read_bytes())
        assert rag_sync(spec, config)["indexed"] == 1
        assert len(drive.downloads) == 1 and sum(embedded) == chunks

        store = open_resources(load_config(config)).store
        points = assert_consistent(store, ledger)
        by_doc: dict[str, list[dict[str, Any]]] = {}
        for point in points:
            by_doc.setdefault(point["doc_id"], []).append(point)
        assert {doc: len(found) for doc, found in by_doc.items()} == {first: chunks, second: chunks, third: chunks}
        for doc_id, path in ((first, "Team/llamas.md"), (second, "Team/Archive/llamas.md")):
            assert {p["path"] for p in by_doc[doc_id]} == {path}
            assert {p["link"] for p in by_doc[doc_id]} == {f"https://drive.google.com/file/d/{doc_id}/view"}
        assert "user:ann@example.com" in by_doc[first][0]["readers"]
        assert "user:ann@example.com" not in by_doc[second][0]["readers"]
        assert "user:bob@example.com" in by_doc[second][0]["readers"]
        texts = {doc: sorted(p["text"] for p in found) for doc, found in by_doc.items()}
        assert texts[first] == texts[second] == texts[third]
        assert ledger_rows(ledger)[copy][1] == f"same content as {fetched}: its chunks and vectors reused"

        # Removing the original leaves the copies whole.
        drive.delete(first)
        assert rag_sync(spec, config)["removed"] == 1
        remaining = {p["doc_id"] for p in assert_consistent(store, ledger)}
        assert remaining == {second, third} and store.count() == 2 * chunks
