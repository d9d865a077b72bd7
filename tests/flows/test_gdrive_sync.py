"""rag-sync with the Google Drive source, end to end: the fake Drive v3 server over HTTP, the real client,
real parsing and embedding, embedded Qdrant, and the ledger on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest

from flows.common.db import Database
from flows.rag.config import load_config
from flows.rag.resources import open_resources
from flows.rag.sources.gdrive import GoogleDriveSpec
from flows.rag.sync import rag_sync
from testkit.documents import TOPICS, write_document
from testkit.gdrive_server import GDOC, FakeDrive, serve
from tests.flows.rag_checks import assert_consistent, config_for, ledger_rows


def upload(drive: FakeDrive, tmp: Path, name: str, parent: str, mime: str, title: str | None = None) -> str:
    """A real document of ``name``'s format about ``name``'s topic, stored in the fake drive as ``title``."""
    local = tmp / name
    write_document(local, TOPICS[name][0])
    return drive.add(title or name, parent, mime, local.read_bytes())


def check(config: dict, ledger_url: str) -> dict[str, dict]:
    """Store and ledger agree; returns one payload per indexed document."""
    services = open_resources(load_config(config))
    points = assert_consistent(services.store, ledger_url)
    return {p["doc_id"]: p for p in points}


def dying_batch(*args: object) -> NoReturn:
    raise RuntimeError("the batch died")


def test_drive_lifecycle_through_rag_sync(tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    files = tmp_path / "files"
    files.mkdir()
    with serve() as (url, drive, faults):
        root = drive.folder("Team", None)
        design = drive.folder("Design", root)
        ids = {
            "md": upload(drive, files, "llamas.md", root, "text/markdown"),
            "txt": upload(drive, files, "volcano.txt", design, "text/plain"),
            # Drive titles often lack an extension: the MIME type decides the parser.
            "pdf": upload(drive, files, "glaciers.pdf", design, "application/pdf", title="Glacier study"),
        }
        docx = files / "solar.docx"
        write_document(docx, TOPICS["solar.docx"][0])
        ids["gdoc"] = drive.add("Solar notes", root, GDOC, docx.read_bytes())  # exported as docx
        ids["big"] = drive.add("huge.pdf", root, "application/pdf", b"%PDF", size_override=500 * 2**20)
        ids["sheet"] = drive.add("Giant plan", root, GDOC, b"x", export_size=20 * 2**20)
        ids["audio"] = drive.add("Interview", root, "audio/mpeg", b"ID3")  # no parser: decided from its MIME type
        spec = GoogleDriveSpec(folder_ids=[root], api_endpoint=url)
        config = config_for(tmp_path, ledger_url, max_file_mb=50, batch_files=3)

        first = rag_sync(spec, config)
        assert (first["new"], first["indexed"]) == (7, 4)
        rows = ledger_rows(ledger_url)
        assert rows[ids["big"]][:2] == ("skipped", "file is 500.0 MB, over the 50 MB limit (max_file_mb)")
        assert rows[ids["audio"]][:2] == ("skipped", "unsupported file type audio/mpeg (no extension) (audio)")
        assert not {ids["big"], ids["audio"]} & {file_id for file_id, _ in drive.downloads}, "skipped: never fetched"
        assert rows[ids["sheet"]][0] == "failed" and "exportSizeLimitExceeded" in (rows[ids["sheet"]][1] or "")
        points = check(config, ledger_url)
        assert set(points) == {ids["md"], ids["txt"], ids["pdf"], ids["gdoc"]}
        assert points[ids["txt"]]["path"] == "Team/Design/volcano.txt"
        assert points[ids["gdoc"]]["link"].endswith(f"/d/{ids['gdoc']}/view")

        # Rename: payload refreshed, nothing re-embedded.
        drive.rename(ids["md"], "alpacas.md")
        renamed = rag_sync(spec, config)
        assert (renamed["renamed"], renamed["chunks"], renamed["new"], renamed["changed"]) == (1, 0, 0, 0)
        assert check(config, ledger_url)[ids["md"]]["title"] == "alpacas.md"

        # A sync dies in its batch (a crash, a cancel): the next one reads on from the change feed, listing nothing,
        # and indexes what the dead one had read.
        volcano = files / "volcano.txt"
        write_document(volcano, "Lava tubes under the island drain the summit crater after each eruption.")
        drive.modify(ids["txt"], volcano.read_bytes())
        with monkeypatch.context() as patch:
            patch.setattr("flows.rag.sync.run_batch", dying_batch)
            with pytest.raises(RuntimeError, match="the batch died"):
                rag_sync(spec, config)
        before = dict(drive.calls)
        resumed = rag_sync(spec, config)
        calls = {method: n - before.get(method, 0) for method, n in drive.calls.items() if n != before.get(method, 0)}
        assert "files.list" not in calls and "changes.getStartPageToken" not in calls, calls
        assert (resumed["changed"], resumed["indexed"], resumed["new"]) == (1, 1, 0)
        assert "Lava tubes" in check(config, ledger_url)[ids["txt"]]["text"]

        # A folder moved out, a file trashed, a Google Doc edited, under 30% API faults.
        drive.move(design, drive.folder("Archive", None))
        drive.trash(ids["md"])
        write_document(docx, "Wind turbines on the ridge feed the village grid at night.")
        drive.modify(ids["gdoc"], docx.read_bytes())
        faults.rate = 0.3
        changed = rag_sync(spec, config)
        faults.rate = 0.0
        assert (changed["removed"], changed["changed"], changed["indexed"]) == (3, 1, 1)
        assert faults.injected > 0
        points = check(config, ledger_url)
        assert set(points) == {ids["gdoc"]} and "Wind turbines" in points[ids["gdoc"]]["text"]
        assert ledger_rows(ledger_url)[ids["txt"]][0] == "deleted"

        # Moved back in, with the change token expired: a full listing restores the same state.
        drive.move(design, root)
        with Database(ledger_url).connect() as conn:
            (cursor,) = conn.execute("SELECT tree_token FROM gdrive_state").fetchone()
        faults.invalid_tokens.add(cursor)
        back = rag_sync(spec, config)
        assert (back["new"], back["indexed"], back["removed"]) == (2, 2, 0)
        points = check(config, ledger_url)
        assert set(points) == {ids["gdoc"], ids["txt"], ids["pdf"]}
        assert points[ids["pdf"]]["path"] == "Team/Design/Glacier study"

        # A higher size limit: a full listing judges every file anew; the one skipped for its size is tried again
        # (same version) and fetched this time, the rest stays as it was.
        raised = rag_sync(spec, {**config, "max_file_mb": 600})
        assert (raised["changed"], raised["unchanged"]) == (1, 5)
        assert ledger_rows(ledger_url)[ids["big"]][0] == "failed"  # its 4 bytes are no PDF
        assert (ids["big"], None) in drive.downloads and ids["audio"] not in {f for f, _ in drive.downloads}
