"""The Drive source against a local Drive v3 server, through the real google-api-python-client.

``Ledger`` applies each ChangeSet the way rag-sync does (complete: replace; incremental: upsert and
remove, then save the cursor), so every scenario checks the state a user would see afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials

from flows.common.db import Database
from flows.common.retry import RetryPolicy
from flows.rag.indexable import limit_bytes
from flows.rag.sources.base import ChangeSet, DocumentRef, FetchError, KnownDocument, Source
from flows.rag.sources.gdrive import GoogleDriveSource, GoogleDriveSpec
from flows.rag.sources.gdrive_client import DriveAuthError
from testkit.gdrive_server import FOLDER, GDOC, FakeDrive, Faults, serve

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Ledger:
    """What rag-sync keeps per source: documents by id, and the cursor."""

    docs: dict[str, DocumentRef] = field(default_factory=dict)
    cursor: str | None = None
    sets: list[ChangeSet] = field(default_factory=list)

    def known(self) -> dict[str, KnownDocument]:
        return {i: KnownDocument(d.version, d.size, None) for i, d in self.docs.items()}

    def sync(self, source: GoogleDriveSource, fail_after: int | None = None) -> ChangeSet:
        """Apply the set: removals first (the first batch carries them), then each document. ``fail_after``: the
        run dies after that many of those steps (0: right after reading the feed), before saving the cursor."""
        cs = source.changes(self.cursor, self.known())
        ids = [d.doc_id for d in cs.documents]
        assert len(ids) == len(set(ids)), "a document listed twice"
        listed = set(ids)
        removed = [i for i in self.docs if i not in listed] if cs.complete else cs.removed
        steps: list[tuple[str, DocumentRef | None]] = [(i, None) for i in removed]
        steps += [(d.doc_id, d) for d in cs.documents]
        for doc_id, doc in steps[:fail_after]:
            if doc is None:
                self.docs.pop(doc_id, None)
            else:
                self.docs[doc_id] = doc
        if fail_after is None:
            self.cursor = cs.next_cursor
        self.sets.append(cs)
        return cs

    def paths(self) -> dict[str, str]:
        return {i: d.path for i, d in self.docs.items()}


@dataclass
class Env:
    url: str
    drive: FakeDrive
    faults: Faults
    db: Database
    root: str
    sleeps: list[float]

    def source(self, max_file_mb: float = 100, **spec: object) -> GoogleDriveSource:
        spec.setdefault("folder_ids", [self.root])
        full = GoogleDriveSpec(api_endpoint=self.url, **spec)  # type: ignore[arg-type]
        retry = RetryPolicy(sleep=self.sleeps.append)
        return GoogleDriveSource(full, self.db, AnonymousCredentials(), retry, limit_bytes(max_file_mb))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with serve() as (url, drive, faults):
        root = drive.folder("Team", None)
        yield Env(url, drive, faults, Database(f"sqlite:///{tmp_path / 'ledger.db'}"), root, [])


def fetch_error(source: GoogleDriveSource, doc: DocumentRef) -> str:
    with pytest.raises(FetchError) as caught, source.fetch(doc):
        pass
    return str(caught.value)


def build_tree(drive: FakeDrive, root: str) -> dict[str, str]:
    """Team/{a.txt, Reports/{q1.pdf, Old/q0.pdf}, Notes (Google Doc)} -> ids by short name."""
    reports = drive.folder("Reports", root)
    old = drive.folder("Old", reports)
    return {
        "reports": reports,
        "old": old,
        "a": drive.add("a.txt", root, content=b"alpha"),
        "q1": drive.add("q1.pdf", reports, "application/pdf", b"%PDF q1"),
        "q0": drive.add("q0.pdf", old, "application/pdf", b"%PDF q0"),
        "notes": drive.add("Notes", root, GDOC, b"notes docx bytes"),
    }


def test_first_sync_lists_scope_with_paths_versions_and_saves_token_first(ledger_url: str) -> None:
    with serve() as (url, drive, _):
        root = drive.folder("Team", None)
        ids = build_tree(drive, root)
        outside = drive.folder("Elsewhere", None)
        drive.add("private.txt", outside, content=b"no")
        token_before = str(drive.seq + 1)
        source = GoogleDriveSpec(folder_ids=[root], api_endpoint=url).build(Database(ledger_url), 2**20)
        assert isinstance(source, Source)
        assert source.source_id == f"gdrive:{root}"
        ledger = Ledger()
        cs = ledger.sync(source)
        assert cs.complete and cs.next_cursor == token_before
        assert ledger.paths() == {
            ids["a"]: "Team/a.txt",
            ids["q1"]: "Team/Reports/q1.pdf",
            ids["q0"]: "Team/Reports/Old/q0.pdf",
            ids["notes"]: "Team/Notes",
        }
        notes = ledger.docs[ids["notes"]]
        assert notes.parse_as == "Notes.docx" and notes.size is None and notes.skip_reason is None
        assert ledger.docs[ids["a"]].version.startswith("md5:") and ledger.docs[ids["a"]].size == 5
        assert (ledger.docs[ids["a"]].link or "").endswith(f"/d/{ids['a']}/view")
        with Database(ledger_url).connect() as conn:
            row = conn.execute("SELECT pending_token, tree_token FROM gdrive_state").fetchone()
        assert row == (token_before, token_before)

        # Nothing changed: an incremental sync with no documents and no removals.
        again = ledger.sync(source)
        assert not again.complete and again.documents == [] and again.removed == []


def test_add_modify_rename_and_moves(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    old_version = ledger.docs[ids["a"]].version

    new = env.drive.add("new.md", ids["reports"], "text/markdown", b"# new")
    cs = ledger.sync(source)
    assert [d.doc_id for d in cs.documents] == [new] and cs.removed == []
    assert ledger.docs[new].path == "Team/Reports/new.md"

    env.drive.modify(ids["a"], b"alpha v2")
    cs = ledger.sync(source)
    assert [d.doc_id for d in cs.documents] == [ids["a"]]
    assert ledger.docs[ids["a"]].version != old_version

    version = ledger.docs[ids["a"]].version
    env.drive.rename(ids["a"], "alpha.txt")
    cs = ledger.sync(source)
    (doc,) = cs.documents
    assert (doc.name, doc.path, doc.version) == ("alpha.txt", "Team/alpha.txt", version)  # payload only

    env.drive.move(ids["q1"], ids["old"])  # within the scope
    cs = ledger.sync(source)
    assert [d.path for d in cs.documents] == ["Team/Reports/Old/q1.pdf"] and cs.removed == []

    outside = env.drive.folder("Archive", None)
    env.drive.move(ids["q1"], outside)  # out of the scope
    cs = ledger.sync(source)
    assert cs.documents == [] and cs.removed == [ids["q1"]]

    env.drive.move(ids["q1"], env.root)  # back in
    cs = ledger.sync(source)
    assert [d.path for d in cs.documents] == ["Team/q1.pdf"]
    assert set(ledger.docs) == {ids["a"], ids["q1"], ids["q0"], ids["notes"], new}


def test_trash_untrash_and_permanent_delete(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)

    env.drive.trash(ids["q0"])
    assert ledger.sync(source).removed == [ids["q0"]]
    env.drive.trash(ids["q0"], False)
    cs = ledger.sync(source)
    assert [d.doc_id for d in cs.documents] == [ids["q0"]] and cs.removed == []
    env.drive.delete(ids["q0"])
    cs = ledger.sync(source)
    assert cs.removed == [ids["q0"]] and cs.documents == []
    # A file created and deleted between two syncs was never known: nothing to remove.
    env.drive.delete(env.drive.add("tmp.txt", env.root, content=b"x"))
    assert ledger.sync(source).removed == []


def test_folder_moves_take_their_subtree(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    archive = env.drive.folder("Archive", None)
    env.drive.move(ids["reports"], archive)
    cs = ledger.sync(source)
    assert sorted(cs.removed) == sorted([ids["q1"], ids["q0"]])
    # A file edited while its folder is out of scope is not picked up.
    env.drive.modify(ids["q0"], b"%PDF q0 v2")
    assert ledger.sync(source).documents == []

    env.drive.move(ids["reports"], env.root)
    cs = ledger.sync(source)
    assert sorted(d.path for d in cs.documents) == ["Team/Reports/Old/q0.pdf", "Team/Reports/q1.pdf"]
    env.drive.trash(ids["old"])  # a trashed folder takes its files out
    assert ledger.sync(source).removed == [ids["q0"]]
    assert set(ledger.docs) == {ids["a"], ids["q1"], ids["notes"]}


def test_google_doc_edited_is_exported_as_docx(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    before = ledger.docs[ids["notes"]].version
    env.drive.modify(ids["notes"], b"notes v2")
    (doc,) = ledger.sync(source).documents
    assert doc.version != before
    with source.fetch(doc) as path:
        assert path.suffix == ".docx" and path.read_bytes() == b"notes v2"
    assert not path.exists()


def test_shortcuts_to_a_file_and_to_a_folder_with_a_cycle(env: Env) -> None:
    elsewhere = env.drive.folder("Elsewhere", None)
    target = env.drive.add("spec.pdf", elsewhere, "application/pdf", b"%PDF spec")
    linked = env.drive.folder("Linked", None)
    deep = env.drive.add("deep.txt", linked, content=b"deep")
    env.drive.shortcut("spec link", env.root, target)
    env.drive.shortcut("Linked folder", env.root, linked)
    env.drive.shortcut("back to team", linked, env.root)  # cycle: followed once, then stopped
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    assert ledger.paths() == {target: "Team/spec link", deep: "Team/Linked folder/deep.txt"}

    env.drive.modify(target, b"%PDF spec v2")  # the target changes outside the scope
    env.drive.add("new.txt", linked, content=b"new")
    cs = ledger.sync(source)
    assert {d.path for d in cs.documents} == {"Team/spec link", "Team/Linked folder/new.txt"}

    shortcut_id = next(i for i, f in env.drive.files.items() if f.name == "Linked folder")
    env.drive.trash(shortcut_id)
    cs = ledger.sync(source)
    assert len(cs.removed) == 2 and deep in cs.removed
    assert set(ledger.docs) == {target}


def test_shared_drive_is_synced_whole(env: Env) -> None:
    drive_id = env.drive.shared_drive("Engineering")
    sub = env.drive.folder("Design", drive_id)
    doc = env.drive.add("arch.md", sub, "text/markdown", b"# arch")
    source, ledger = env.source(folder_ids=[], drive_ids=[drive_id]), Ledger()
    ledger.sync(source)
    assert ledger.paths() == {doc: "Engineering/Design/arch.md"}
    env.drive.rename(sub, "Architecture")
    env.drive.modify(doc, b"# arch v2")
    assert [d.path for d in ledger.sync(source).documents] == ["Engineering/Architecture/arch.md"]


def test_a_shared_drive_renamed_renames_paths_and_one_no_longer_shared_fails_with_one_line(env: Env) -> None:
    from flows.common.errors import ConfigError

    drive_id = env.drive.shared_drive("Engineering")
    doc = env.drive.add("arch.md", env.drive.folder("Design", drive_id), "text/markdown", b"# arch")
    source, ledger = env.source(folder_ids=[], drive_ids=[drive_id]), Ledger()
    version = ledger.sync(source).documents[0].version
    env.drive.rename_drive(drive_id, "Platform")
    renamed = ledger.sync(source)
    assert not renamed.complete, "an incremental sync, not a full listing, saw the rename"
    assert [(d.path, d.version) for d in renamed.documents] == [("Platform/Design/arch.md", version)]
    assert ledger.paths() == {doc: "Platform/Design/arch.md"}
    env.drive.lose_drive(drive_id)
    with pytest.raises(ConfigError, match=rf"shared drive {drive_id} was deleted or is no longer shared"):
        ledger.sync(source)


def test_what_cannot_be_indexed_is_listed_with_the_reason_from_its_metadata_alone(env: Env) -> None:
    form = "application/vnd.google-apps.form"
    files = {
        "huge.pdf": ("application/pdf", "file is 300.0 MB, over the 50 MB limit (max_file_mb)"),
        "photos.zip": ("application/zip", "unsupported file type .zip (archive)"),
        "Interview": ("audio/mpeg", "unsupported file type audio/mpeg (no extension) (audio)"),
        "demo.mp4": ("video/mp4", "unsupported file type .mp4 (video)"),
        "Survey": (form, f"unsupported file type {form} (no export)"),  # a Google-native type without an export
        "Q3 report": ("application/pdf", None),  # named without an extension: parsed by its MIME type's
    }  # fmt: skip
    ids = {
        env.drive.add(name, env.root, mime, b"%PDF", size_override=300 * 2**20 if name == "huge.pdf" else None): name
        for name, (mime, _) in files.items()
    }
    ledger = Ledger()
    ledger.sync(env.source(max_file_mb=50))
    assert {ids[i]: d.skip_reason for i, d in ledger.docs.items()} == {n: r for n, (_, r) in files.items()}
    assert env.drive.downloads == [], "the listing downloads nothing"
    assert [d.parse_as for d in ledger.docs.values() if d.name == "Q3 report"] == ["Q3 report.pdf"]


def test_both_sources_give_the_same_file_the_same_reason(env: Env, tmp_path: Path) -> None:
    from flows.rag.sources.local import LocalFolderSource

    folder = tmp_path / "folder"
    folder.mkdir()
    files = {"huge.pdf": ("application/pdf", 3 * 2**20), "talk.mp3": ("audio/mpeg", 10), "a.txt": ("text/plain", 5)}
    for name, (mime, size) in files.items():
        with open(folder / name, "wb") as out:
            out.truncate(size)
        env.drive.add(name, env.root, mime, b"x", size_override=size)
    ledger = Ledger()
    ledger.sync(env.source(max_file_mb=1))
    from_drive = {d.name: d.skip_reason for d in ledger.docs.values()}
    from_folder = {d.name: d.skip_reason for d in LocalFolderSource(folder, 2**20).changes(None, {}).documents}
    assert from_drive == from_folder
    assert from_drive["huge.pdf"] == "file is 3.0 MB, over the 1 MB limit (max_file_mb)"


def test_other_indexing_rules_list_in_full_once_so_unchanged_files_are_judged_anew(env: Env) -> None:
    big = env.drive.add("huge.pdf", env.root, "application/pdf", b"%PDF", size_override=3 * 2**20)
    ledger = Ledger()
    ledger.sync(env.source(max_file_mb=1))
    assert not ledger.sync(env.source(max_file_mb=1)).complete  # same rules: the change feed
    relisted = ledger.sync(env.source(max_file_mb=5))
    assert relisted.complete and [d.skip_reason for d in relisted.documents if d.doc_id == big] == [None]
    assert not ledger.sync(env.source(max_file_mb=5)).complete
    assert ledger.sync(env.source(max_file_mb=5, mime_allowlist=["text/plain"])).complete


def test_the_mime_allowlist_narrows_what_is_indexed(env: Env) -> None:
    pdf = env.drive.add("q1.pdf", env.root, "application/pdf", b"%PDF")
    text = env.drive.add("a.txt", env.root, content=b"alpha")
    ledger = Ledger()
    ledger.sync(env.source(mime_allowlist=["application/pdf"]))
    assert ledger.docs[pdf].skip_reason is None
    assert ledger.docs[text].skip_reason == "type text/plain is not in the MIME allow-list"


def test_a_drawing_is_exported_as_pdf(env: Env) -> None:
    drawing = env.drive.add("Rack layout", env.root, "application/vnd.google-apps.drawing", b"%PDF-1.4 drawing")
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    ref = ledger.docs[drawing]
    assert (ref.parse_as, ref.skip_reason, ref.size) == ("Rack layout.pdf", None, None)
    with source.fetch(ref) as path:
        assert path.suffix == ".pdf" and path.read_bytes() == b"%PDF-1.4 drawing"
    assert env.drive.downloads == [(drawing, "application/pdf")]


def test_export_errors_and_missing_files_fail_that_file_only(env: Env) -> None:
    big = env.drive.add("Big sheet", env.root, GDOC, b"x", export_size=11 * 2**20)
    odd = env.drive.add("Odd", env.root, GDOC, b"x", export_size=-1)
    gone = env.drive.add("gone.txt", env.root, content=b"x")
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    env.drive.delete(gone)
    assert "exportSizeLimitExceeded" in fetch_error(source, ledger.docs[big])
    assert "cannotExportFile" in fetch_error(source, ledger.docs[odd])
    assert fetch_error(source, ledger.docs[gone]) == "file not found in Drive (deleted, or no access)"


def test_large_download_streams_in_chunks_and_cleans_up(env: Env) -> None:
    payload = bytes(range(256)) * (80 * 1024)  # 20 MiB: three 8 MiB range requests
    fid = env.drive.add("video.pdf", env.root, "application/pdf", payload)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    calls = env.drive.calls.get("files.get_media", 0)
    with source.fetch(ledger.docs[fid]) as path:
        assert path.stat().st_size == len(payload) and path.read_bytes() == payload
    assert env.drive.calls["files.get_media"] - calls == 3
    assert not path.exists()


def test_thirty_percent_faults_end_in_the_same_state(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    for i in range(30):  # enough folders and pages to cross many faults
        folder = env.drive.folder(f"f{i}", ids["reports"])
        for j in range(5):
            env.drive.add(f"n{j}.txt", folder, content=f"{i}-{j}".encode())
    env.faults.rate = 0.3
    env.faults.retry_after = "5"  # every third fault is a 429 asking for 5 s (the sleep is recorded)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    assert len(ledger.docs) == 154
    for doc in list(ledger.docs.values()):  # ~160 downloads: dozens of injected faults
        with source.fetch(doc) as path:
            assert path.read_bytes() == env.drive.files[doc.doc_id].content
    env.drive.modify(ids["a"], b"alpha v2")
    env.drive.move(ids["reports"], env.drive.folder("Out", None))
    ledger.sync(source)
    assert env.faults.injected >= 20 and len(env.sleeps) == env.faults.injected
    assert sum(1 for s in env.sleeps if s >= 5) >= env.faults.injected // 3  # Retry-After honoured

    env.faults.rate = 0.0
    clean = Ledger()
    clean.sync(env.source(folder_ids=[env.root]))  # fresh listing without faults: the truth
    assert ledger.paths() == clean.paths() == {ids["a"]: "Team/a.txt", ids["notes"]: "Team/Notes"}
    assert ledger.docs[ids["a"]].version == clean.docs[ids["a"]].version


def test_invalid_token_falls_back_to_a_full_listing(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    env.drive.trash(ids["q1"])
    env.faults.invalid_tokens.add(ledger.cursor or "")
    cs = ledger.sync(source)
    assert cs.complete and ids["q1"] not in {d.doc_id for d in cs.documents}
    assert set(ledger.docs) == {ids["a"], ids["q0"], ids["notes"]}
    env.drive.add("after.txt", env.root, content=b"x")  # and incremental sync resumes afterwards
    cs = ledger.sync(source)
    assert not cs.complete and [d.name for d in cs.documents] == ["after.txt"]


def drive_calls(drive: FakeDrive, before: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in drive.calls.items() if n != before.get(k, 0)}


@pytest.mark.parametrize("fail_after", [0, 2, 99], ids=["after-feed-read", "mid-batch", "before-cursor-store"])
def test_a_sync_that_dies_after_reading_the_feed_resumes_from_the_feed_without_a_full_listing(
    env: Env, fail_after: int
) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    # What the dying runs see: an edit, a new file, a folder moved out (its file leaves only through the tree)
    # and one renamed (its file's new path comes from re-listing it), then more of each between the runs.
    env.drive.modify(ids["a"], b"alpha v2")
    new = env.drive.add("new.txt", ids["reports"], content=b"new")
    env.drive.move(ids["old"], env.drive.folder("Out", None))
    env.drive.rename(ids["reports"], "Quarterly")
    ledger.sync(source, fail_after)
    env.drive.trash(new)
    later = env.drive.add("later.txt", env.root, content=b"later")
    before = dict(env.drive.calls)
    ledger.sync(source, fail_after)  # dies again: what neither run applied still comes
    env.drive.modify(ids["notes"], b"notes v2")
    ledger.sync(source)
    calls = drive_calls(env.drive, before)
    assert not any(cs.complete for cs in ledger.sets[1:])
    assert calls.get("changes.list", 0) >= 2 and "files.list" not in calls, calls
    assert "changes.getStartPageToken" not in calls, "a full listing starts with getStartPageToken"
    truth = {ids["a"]: "Team/a.txt", ids["q1"]: "Team/Quarterly/q1.pdf", ids["notes"]: "Team/Notes",
             later: "Team/later.txt"}  # fmt: skip
    assert ledger.paths() == truth
    again = ledger.sync(source)  # the cursor caught up: nothing handed out twice
    assert (again.complete, again.documents, again.removed) == (False, [], [])
    clean = Ledger()
    clean.sync(env.source())  # a fresh full listing: the truth, versions included
    assert clean.docs == ledger.docs


def test_a_first_sync_that_dies_comes_back_complete_without_listing_again(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source, fail_after=1)  # the first backfill stopped after one document (a crash, a budget)
    env.drive.trash(ids["q0"])
    new = env.drive.add("new.txt", ids["old"], content=b"new")
    before = dict(env.drive.calls)
    cs = ledger.sync(source)
    calls = drive_calls(env.drive, before)
    assert cs.complete and "files.list" not in calls and "changes.getStartPageToken" not in calls, calls
    assert ledger.paths() == {ids["a"]: "Team/a.txt", ids["q1"]: "Team/Reports/q1.pdf", ids["notes"]: "Team/Notes",
                              new: "Team/Reports/Old/new.txt"}  # fmt: skip
    assert not ledger.sync(source).complete


def test_a_first_sync_that_died_before_unapplied_changes_were_kept_is_listed_again(env: Env) -> None:
    build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source, fail_after=0)
    with env.db.connect() as conn:  # the state an earlier release left: a tree, and no set kept
        conn.execute("UPDATE gdrive_state SET unapplied_complete = 0")
        conn.execute("DELETE FROM gdrive_unapplied")
    cs = ledger.sync(source)
    assert cs.complete and len(cs.documents) == 4


def test_unapplied_changes_survive_the_ledger_and_a_changed_document_ref(tmp_path: Path) -> None:
    import dataclasses
    import json

    from flows.rag.sources.gdrive_store import GdriveStore, Unapplied
    from flows.rag.sources.gdrive_tree import Tree

    store = GdriveStore(Database(f"sqlite:///{tmp_path / 'ledger.db'}"), "gdrive:x")
    ref = DocumentRef("f1", "a.txt", "Team/a.txt", "text/plain", "md5:1", 5, "2026-01-01T00:00:01Z", link="l")
    refs = {f"f{i}": dataclasses.replace(ref, doc_id=f"f{i}") for i in range(1, 12_000)} | {"gone": None}
    store.save(Tree({"r": "Team"}), "7", [], (), True, "rules", Unapplied("3", True, refs))
    state = store.state()
    assert (state.tree_token, state.unapplied_from, state.unapplied_complete) == ("7", "3", True)
    assert store.unapplied(state).refs == refs
    with store.db.connect() as conn:
        (text,) = conn.execute("SELECT refs_json FROM gdrive_unapplied ORDER BY part").fetchone()
        part = json.loads(text)  # as another DocumentRef wrote it: a field it had ("retired"), none it lacked (link)
        part["fields"] = ["retired" if f == "link" else f for f in part["fields"]]
        conn.execute("UPDATE gdrive_unapplied SET refs_json = %s WHERE part = 0", (json.dumps(part),))
    assert store.unapplied(store.state()).refs["f1"] == dataclasses.replace(ref, link=None)


def test_my_drive_by_its_alias_root_is_keyed_by_its_real_id(env: Env) -> None:
    my_drive = env.drive.my_drive
    top = env.drive.add("top.txt", my_drive, content=b"top")
    projects = env.drive.folder("Projects", my_drive)
    plan = env.drive.add("plan.md", projects, "text/markdown", b"# plan")
    source, ledger = env.source(folder_ids=["root"]), Ledger()
    ledger.sync(source)
    assert ledger.paths() == {top: "My Drive/top.txt", plan: "My Drive/Projects/plan.md"}
    assert source.source_id == "gdrive:root"  # the spec's name: the same source whatever the id behind it
    # The change feed names the real id as the parent too.
    new = env.drive.add("new.txt", my_drive, content=b"new")
    env.drive.rename(projects, "Plans")
    env.drive.trash(top)
    cs = ledger.sync(source)
    assert not cs.complete and cs.removed == [top]
    assert ledger.paths() == {new: "My Drive/new.txt", plan: "My Drive/Plans/plan.md"}


def test_revoked_credentials_fail_the_run_with_a_clear_message(env: Env) -> None:
    env.faults.unauthorized = True
    with pytest.raises(DriveAuthError, match="rejected the credentials"):
        env.source().changes(None, {})


def test_spec_needs_a_scope() -> None:
    from flows.common.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one folder"):
        GoogleDriveSpec().build(Database("sqlite:///unused.db"), 2**20)
    assert GoogleDriveSpec(folder_ids=["x"]).kind == "gdrive"
    assert FOLDER not in GoogleDriveSpec().mime_allowlist


def test_renaming_a_folder_or_the_root_updates_paths_without_new_versions(env: Env) -> None:
    ids = build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    versions = {i: d.version for i, d in ledger.docs.items()}
    env.drive.rename(ids["reports"], "Quarterly")
    cs = ledger.sync(source)
    assert sorted(d.path for d in cs.documents) == ["Team/Quarterly/Old/q0.pdf", "Team/Quarterly/q1.pdf"]
    assert all(d.version == versions[d.doc_id] for d in cs.documents) and cs.removed == []
    env.drive.rename(env.root, "Company")
    ledger.sync(source)
    assert sorted(ledger.paths().values()) == [
        "Company/Notes",
        "Company/Quarterly/Old/q0.pdf",
        "Company/Quarterly/q1.pdf",
        "Company/a.txt",
    ]


def test_downloads_run_with_bounded_parallelism(env: Env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [env.drive.add(f"n{i}.txt", env.root, content=f"note {i}".encode()) for i in range(8)]
    source, ledger = env.source(max_parallel_downloads=2), Ledger()
    ledger.sync(source)
    env.faults.media_delay_s = 0.1

    def read(doc_id: str) -> bytes:
        with source.fetch(ledger.docs[doc_id]) as path:
            return path.read_bytes()

    with ThreadPoolExecutor(8) as pool:  # the pipeline may use more threads than the Drive limit
        contents = list(pool.map(read, ids))
    assert contents == [f"note {i}".encode() for i in range(8)]
    assert env.faults.media_peak == 2


def test_folders_outside_the_scope_are_not_stored_until_they_move_in(env: Env) -> None:
    build_tree(env.drive, env.root)
    source, ledger = env.source(), Ledger()
    ledger.sync(source)
    outside = env.drive.folder("Unrelated", None)
    inner = env.drive.folder("Inner", outside)
    doc = env.drive.add("x.txt", inner, content=b"x")
    assert ledger.sync(source).documents == []
    with env.db.connect() as conn:
        stored = {r[0] for r in conn.execute("SELECT node_id FROM gdrive_nodes").fetchall()}
    assert outside not in stored and inner not in stored
    env.drive.move(outside, env.root)
    assert [d.path for d in ledger.sync(source).documents] == ["Team/Unrelated/Inner/x.txt"]
    assert doc in ledger.docs


def test_an_unreadable_scope_folder_fails_the_run_with_one_line(env: Env) -> None:
    from flows.common.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Drive folder nope cannot be read: files.get nope failed with HTTP 404"):
        env.source(folder_ids=["nope"]).changes(None, {})


def test_a_module_that_names_the_drive_source_imports_no_google_client() -> None:
    """A local ingest imports the Drive source's module (resources.py names its spec) and the pacing step, never
    the Google client libraries: a Drive source imports them when it is built."""
    code = (
        "import sys, flows.rag.resources, flows.rag.pacing\n"
        "print(sorted(m for m in sys.modules if m.startswith(('googleapiclient', 'google.auth', 'httplib2'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
