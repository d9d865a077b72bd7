"""Google Drive as a RAG source: folders and whole shared drives, full and incremental sync.

First sync (or no usable tree): ``changes.getStartPageToken`` is recorded *before* listing, then the scope
is listed breadth-first (many parents per ``files.list`` query, 1000 per page, selected fields only), and
the token becomes the ChangeSet's ``next_cursor`` so nothing changed during the listing is lost.
Later syncs read ``changes.list`` from the cursor to ``newStartPageToken``: cost O(changes), not O(drive).
The folder tree lives in the ledger (gdrive_store) and is updated from the same change stream; folders
entering or leaving the scope bring their whole subtree in or out. A sync that dies before saving its cursor
costs no new listing: the tree, its token and the document changes handed out are saved together, and the
next sync reads on from the tree's token and hands the unapplied changes out again (gdrive_store's docstring).
An invalid or expired token falls back to a full listing (``complete=True``), which the sync turns into
the right end state.

Sharing the feed does not report: a file's permissions include those inherited from its folders, but the feed's
Change is "a change to a file or shared drive" (developers.google.com/workspace/drive/api/reference/rest/v3/changes)
and says nothing of a folder's descendants, so a folder whose sharing changed is taken to be reported alone. Each
folder's sharing is kept with the tree; one that comes in the feed with other sharing (or sharing its listing does
not show) has the files below it listed again (files.list per 40 folders, permissions.list per file on a shared
drive) and handed out with their new readers, same version: a payload update. A grant that expires is reported by
nothing: each file's next lapse is kept (gdrive_store) and the files past theirs are read again at the next sync.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_serializer

from blocks.gdrive import GoogleDriveCredentials
from flows.common.blocks import block_name, resolve_block
from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.common.retry import RetryPolicy
from flows.rag.indexable import listing_rules
from flows.rag.sources.base import ChangeSet, DocumentRef, FetchError, KnownDocument
from flows.rag.sources.gdrive_budget import QuotaDays
from flows.rag.sources.gdrive_errors import DriveApiError, fetch_reason
from flows.rag.sources.gdrive_quota import QuotaMeter, utc_day
from flows.rag.sources.gdrive_refs import (
    EXPORTS,
    FILE_FIELDS,
    access_of,
    folder_access,
    needs_revision,
    skip_of,
    to_ref,
)
from flows.rag.sources.gdrive_store import FileRow, GdriveStore, Unapplied
from flows.rag.sources.gdrive_tree import (
    FOLDER,
    KIND_FOLDER,
    KIND_FOLDER_SHORTCUT,
    SHORTCUT,
    Tree,
    first_parent,
    node_from_item,
)

if TYPE_CHECKING:
    from flows.rag.sources.gdrive_api import DriveApi

log = logging.getLogger(__name__)

PARENTS_PER_QUERY = 40  # parents OR-ed in one files.list query: fewer calls, q stays well under limits


class GoogleDriveSpec(BaseModel):
    """Which part of Google Drive to sync (a parameter of rag-sync, shown in the deployment form)."""

    kind: Literal["gdrive"] = "gdrive"
    folder_ids: list[str] = Field(default_factory=list, description="Folder ids, synced recursively")
    drive_ids: list[str] = Field(default_factory=list, description="Shared drive ids, synced whole")
    credentials_block: GoogleDriveCredentials | str | None = Field(
        default=None,
        description="Saved GoogleDriveCredentials block (UI: pick one; CLI/prefect.yaml: its name);"
        " empty: application default credentials",
    )
    mime_allowlist: list[str] = Field(
        default_factory=list,
        description="Only these Drive MIME types are ingested, others recorded skipped (empty: every type a parser"
        " reads; Google Docs, Slides, Sheets and Drawings are exported)",
    )
    api_endpoint: str | None = Field(default=None, description="Override of the API URL (tests)")
    max_parallel_downloads: int = Field(default=4, ge=1, le=32, description="Concurrent downloads at most")

    def build(self, db: Database, max_file_bytes: int) -> GoogleDriveSource:
        if not self.folder_ids and not self.drive_ids:
            raise ConfigError("the Google Drive source needs at least one folder id or shared drive id")
        return GoogleDriveSource(self, db, self._credentials(), max_file_bytes=max_file_bytes)

    @field_serializer("credentials_block")
    def _credentials_by_name(self, value: GoogleDriveCredentials | str | None) -> str | None:
        # A dispatched batch gets the spec as parameters: the block's name, never its (masked) secrets.
        return block_name(value)

    def _credentials(self) -> Any:
        if block := resolve_block(GoogleDriveCredentials, self.credentials_block, "credentials_block"):
            return block.get_credentials()
        if self.api_endpoint:
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()
        import google.auth

        from flows.rag.sources.gdrive_client import DRIVE_READONLY

        creds, _ = google.auth.default(scopes=[DRIVE_READONLY])
        return creds


class GoogleDriveSource:
    """Implements flows.rag.sources.base.Source for a Drive scope."""

    def __init__(
        self,
        spec: GoogleDriveSpec,
        db: Database,
        credentials: Any,
        retry: RetryPolicy | None = None,
        max_file_bytes: int | None = None,  # RagConfig.max_file_mb; None: no limit
        clock: Callable[[], datetime] | None = None,  # permissions' expiry and a download's day; None: the sync's
    ) -> None:
        # The Google client libraries, imported here: a module that names a Drive source (a local ingest's) need not.
        from flows.rag.sources.gdrive_api import DriveApi
        from flows.rag.sources.gdrive_client import DriveService

        self.spec = spec
        self.api: DriveApi = DriveApi(DriveService(credentials, spec.api_endpoint), retry or RetryPolicy())
        self._source_id = "gdrive:" + ",".join(sorted({*spec.folder_ids, *spec.drive_ids}))
        self.store = GdriveStore(db, self._source_id)
        self.budget = QuotaDays(db)
        self._allow = set(spec.mime_allowlist)
        self._max_bytes = max_file_bytes
        # The fields listed are part of the rules: a listing that records more (readers) is done in full once.
        self._rules = listing_rules(max_file_bytes, self._allow, [FILE_FIELDS])
        self._known: Mapping[str, KnownDocument] = {}  # the ledger's view, for the current changes() call
        self._downloads = threading.BoundedSemaphore(spec.max_parallel_downloads)
        self._clock = clock or _sync_clock
        self._now = self._clock()  # the time of the current changes() call

    @property
    def source_id(self) -> str:
        return self._source_id

    def _roots(self) -> Tree:
        roots: dict[str, str] = {}
        sharing: dict[str, str | None] = {}
        for folder_id in self.spec.folder_ids:
            try:
                folder = self.api.get_file(folder_id)
            except DriveApiError as exc:
                raise ConfigError(f"Drive folder {folder_id} cannot be read: {exc}") from exc
            # Keyed by the id Drive answers with: for the alias "root" (My Drive) that is the real id, the one its
            # children name as their parent (developers.google.com/workspace/drive/api/guides/folder).
            roots[folder.get("id", folder_id)] = folder.get("name", folder_id)
            sharing[folder.get("id", folder_id)] = folder_access(folder, self._now)
        for drive_id in self.spec.drive_ids:
            try:
                drive = self.api.get_drive(drive_id)
            except DriveApiError as exc:
                raise ConfigError(f"shared drive {drive_id} cannot be read: {exc}") from exc
            roots[drive_id] = drive.get("name", drive_id)
        tree = Tree(roots)
        tree.root_access = sharing
        return tree

    # -- listing -----------------------------------------------------------------------------------

    def _walk(self, tree: Tree, start: list[str], files: dict[str, tuple[dict, str]]) -> None:
        """List ``start`` folders and everything below (shortcut targets included, each once)."""
        visited = set(start)
        queue = deque(start)
        while queue:
            batch = [queue.popleft() for _ in range(min(PARENTS_PER_QUERY, len(queue)))]
            wanted = set(batch)
            for item in self.api.list_children(batch):
                parent = first_parent(item, wanted)
                node = node_from_item(item)
                if node is not None:
                    node.parent = parent
                    if node.kind == KIND_FOLDER:
                        node.access = folder_access(item, self._now)
                    tree.put(item["id"], node)
                    nxt = item["id"] if item["mimeType"] == FOLDER else node.target
                    if item["mimeType"] == SHORTCUT and node.kind != KIND_FOLDER_SHORTCUT:
                        continue
                    if nxt and nxt not in visited:  # a visited target is a cycle or a second path
                        visited.add(nxt)
                        queue.append(nxt)
                elif parent is not None:
                    files[item["id"]] = (item, parent)

    def _refs(
        self,
        tree: Tree,
        paths: dict[str, str],
        files: dict[str, tuple[dict, str]],
        targets: set[str] | None,
        lookup: dict[str, tuple[dict, str]] | None = None,
    ) -> tuple[dict[str, DocumentRef], list[FileRow]]:
        """DocumentRefs and ledger rows for in-scope files and file-shortcut targets (all, or ``targets``)."""
        docs: dict[str, DocumentRef] = {}
        rows: list[FileRow] = []
        direct = {file_id for file_id, (_, parent) in files.items() if parent in paths}
        for target, (shortcut_id, path) in tree.file_shortcuts(paths).items():
            if target in direct or (targets is not None and target not in targets):
                continue
            try:
                known_items = lookup if lookup is not None else files
                item = known_items[target][0] if target in known_items else self.api.get_file(target)
            except DriveApiError as exc:
                log.warning("shortcut %s points to an unreadable file: %s", shortcut_id, exc)
                continue
            if item.get("trashed"):
                continue
            docs[target], lapses = self._ref(item, path)
            rows.append(FileRow(target, tree.nodes[shortcut_id].parent or "", shortcut_id, lapses))
        # Pop while converting: raw API dicts are freed as refs are made, so peak memory holds one copy.
        while files:
            file_id, (item, parent) = files.popitem()
            if file_id in direct:
                path = f"{paths[parent]}/{item.get('name', '')}"
                docs[file_id], lapses = self._ref(item, path)
                rows.append(FileRow(file_id, parent, None, lapses))
        return docs, rows

    def _ref(self, item: dict, path: str) -> tuple[DocumentRef, datetime | None]:
        """The file's DocumentRef and when its readers next lapse; asks Drive for what the listing lacks: the head
        revision of a Google-native file whose modifiedTime moved (a rename or an edit?), and the permissions of a
        shared drive's file."""
        known = self._known.get(item["id"])
        indexable = skip_of(item, self._allow, self._max_bytes) is None
        revised = self.api.head_revision_time(item["id"]) if indexable and needs_revision(item, known) else None
        permissions = None
        if "permissions" not in item and item.get("driveId"):
            permissions = self.api.list_permissions(item["id"])
        access = access_of(item, permissions, self._now)
        return to_ref(item, path, self._allow, self._max_bytes, known, revised, access.readers), access.lapses

    def _full(self, cursor: str | None) -> ChangeSet:
        token = self.api.start_token()
        self.store.save_pending_token(token)  # before listing: changes made meanwhile stay in the feed
        tree = self._roots()
        files: dict[str, tuple[dict, str]] = {}
        self._walk(tree, sorted(tree.roots), files)
        paths = tree.scope_paths()
        docs, rows = self._refs(tree, paths, files, None)
        handed = Unapplied(cursor, complete=True, refs=docs)
        self.store.save(tree, token, rows, (), replace=True, rules=self._rules, handed=handed)
        return ChangeSet(documents=list(docs.values()), complete=True, next_cursor=token)

    def _apply_feed(
        self, tree: Tree, latest: dict[str, dict]
    ) -> tuple[dict[str, dict | None], set[str], set[str], set[str]]:
        """Folder and shortcut changes go into the tree; returns (file changes, touched nodes, new nodes, known
        folders whose sharing changed or cannot be told).

        File changes map to their new resource, or None when removed or trashed.
        """
        changed: dict[str, dict | None] = {}
        touched: set[str] = set()  # folders and shortcuts that changed
        fresh: set[str] = set()  # folders and shortcuts seen for the first time
        reshared: set[str] = set()
        for file_id, change in latest.items():
            item = change.get("file")
            gone = bool(change.get("removed")) or item is None or bool(item.get("trashed"))
            if file_id in tree.roots:
                if gone:
                    raise ConfigError(f"the scope root {file_id} was removed or trashed in Drive")
                if item and file_id not in self.spec.drive_ids:
                    if item.get("name"):
                        tree.roots[file_id] = item["name"]  # a renamed root renames every path
                    sharing = folder_access(item, self._now)
                    if sharing is None or sharing != tree.root_access.get(file_id):
                        reshared.add(file_id)
                    tree.root_access[file_id] = sharing
                continue
            node = None if gone or item is None else node_from_item(item)
            if node is not None:
                if node.kind == KIND_FOLDER:
                    node.access = folder_access(item, self._now)
                if file_id not in tree.nodes:
                    fresh.add(file_id)
                elif node.kind == KIND_FOLDER and (node.access is None or node.access != tree.nodes[file_id].access):
                    reshared.add(file_id)
                tree.put(file_id, node)
                touched.add(file_id)
            elif file_id in tree.nodes:  # a known folder or shortcut was removed or trashed
                tree.drop(file_id)
                touched.add(file_id)
            else:
                changed[file_id] = None if gone else item
        return changed, touched, fresh, reshared

    def _apply_drive_changes(self, tree: Tree, drives: Mapping[str, dict]) -> set[str]:
        """A scope drive renamed renames every path under it; one deleted or no longer shared with this account
        fails the run, as a removed scope folder does: the spec names something that is gone. Returns the scope
        drives that changed: their members, who read every file in them, may have (the change does not say)."""
        changed: set[str] = set()
        for drive_id in self.spec.drive_ids:
            change = drives.get(drive_id)
            if change is None:
                continue
            if change.get("removed") or not change.get("drive"):
                raise ConfigError(
                    f"shared drive {drive_id} was deleted or is no longer shared with this account;"
                    " remove it from drive_ids"
                )
            tree.roots[drive_id] = change["drive"].get("name") or drive_id
            changed.add(drive_id)
        return changed

    def _incremental(self, token_from: str, carried: Unapplied, known: Mapping[str, KnownDocument]) -> ChangeSet | None:
        """The feed from ``token_from`` (the tree's token) on top of ``carried``, the changes not yet applied."""
        read = self.api.read_changes(token_from)
        if read is None:
            return None
        latest, drives, token = read
        for file_id in self.store.lapsed(self._now):  # a grant expired: nothing in the feed says so
            if file_id not in latest:
                latest[file_id] = self._reread(file_id)
        tree = self.store.load_tree()
        old_paths = tree.scope_paths()
        redrawn = self._apply_drive_changes(tree, drives)
        changed, touched, fresh, reshared = self._apply_feed(tree, latest)
        reshared |= redrawn
        new_paths = tree.scope_paths()
        files: dict[str, tuple[dict, str]] = {}
        moved_in = [f for f in new_paths if f not in old_paths]
        if moved_in:  # folders that entered the scope bring their whole subtree
            self._walk(tree, moved_in, files)
            new_paths = tree.scope_paths()
        moved_out = [f for f in old_paths if f not in new_paths]
        # The feed covers the whole Drive: forget new folders/shortcuts that are not in the scope, so the
        # stored tree stays the size of the scope (one moving in later is listed when it does).
        for node_id in fresh:
            node = tree.nodes.get(node_id)
            if node is not None and node_id not in new_paths and node.parent not in new_paths:
                tree.nodes.pop(node_id)
                tree.dirty.discard(node_id)
        # Folders renamed or moved within the scope: their files' paths changed; folders under one whose sharing
        # changed: their files' readers did. Re-list them (one query per 40 folders) and hand the files over as
        # renames (same version: payload only).
        repathed = [f for f in new_paths if f in old_paths and old_paths[f] != new_paths[f]]
        inherit = tree.folders_under(sorted(f for f in reshared if f in new_paths))
        relist = list(dict.fromkeys([*repathed, *(f for f in inherit if f in new_paths and f not in moved_in)]))
        for start in range(0, len(relist), PARENTS_PER_QUERY):
            batch = relist[start : start + PARENTS_PER_QUERY]
            for item in self.api.list_children(batch):
                node = tree.nodes.get(item["id"])
                if item.get("mimeType") == FOLDER and node is not None:
                    node.access = folder_access(item, self._now)  # it inherits what changed above it too
                    tree.put(item["id"], node)
                elif item.get("mimeType") not in (FOLDER, SHORTCUT):
                    files.setdefault(item["id"], (item, first_parent(item, set(batch)) or ""))

        candidates = {file_id for file_id, _ in self.store.files_under(moved_out)}
        for file_id, item in changed.items():
            parent = first_parent(item, new_paths) if item else None
            if item is not None and parent in new_paths:
                files[file_id] = (item, parent)
            else:
                candidates.add(file_id)
        # File shortcuts in scope: refresh a target when the shortcut or the target changed, the
        # shortcut entered the scope, or the target left its direct place but is still reachable.
        targets = tree.file_shortcuts(new_paths)
        wanted = {
            t
            for t, (s, _) in targets.items()
            if s in touched
            or t in changed
            or t in candidates
            or tree.nodes[s].parent in moved_in
            or tree.nodes[s].parent in repathed
        }
        lookup = {**files, **{f: (i, "") for f, i in changed.items() if i is not None and f not in files}}
        docs, rows = self._refs(tree, new_paths, files, wanted, lookup)
        for file_id, shortcut_id in self.store.shortcut_rows():
            if file_id not in targets and (shortcut_id in touched or shortcut_id not in tree.nodes):
                candidates.add(file_id)  # its shortcut is gone or left the scope
        recorded = self.store.shortcut_of(sorted(candidates))
        removed = sorted(f for f in candidates if f not in docs and (f in known or f in recorded))
        carried.refs.update(dict.fromkeys(removed))
        carried.refs.update(docs)  # the latest word on each document wins
        self.store.save(tree, token, rows, removed, replace=False, rules=self._rules, handed=carried)
        return ChangeSet(
            documents=[ref for ref in carried.refs.values() if ref is not None],
            removed=[] if carried.complete else sorted(f for f, ref in carried.refs.items() if ref is None),
            complete=carried.complete,
            next_cursor=token,
        )

    def _reread(self, file_id: str) -> dict:
        """A file as a change entry of the feed would give it; one gone from Drive (404) as removed."""
        try:
            return {"fileId": file_id, "file": self.api.get_file(file_id)}
        except DriveApiError as exc:
            if exc.status == 404:
                return {"fileId": file_id, "removed": True}
            raise

    # -- Source protocol ---------------------------------------------------------------------------

    def changes(self, cursor: str | None, known: Mapping[str, KnownDocument]) -> ChangeSet:
        self._known = known
        self._now = self._clock()
        state = self.store.state()
        # At the tree's token every change handed out was applied. At the cursor the handed-out set started from,
        # the run that got it died before saving its cursor; only a full listing's set starts from None.
        applied = cursor is not None and cursor == state.tree_token
        died = cursor == state.unapplied_from and (cursor is not None or state.unapplied_complete)
        if state.tree_token is None or not (applied or died):
            if cursor is not None:
                log.warning("stored Drive tree does not match the cursor: listing in full")
        elif state.listing_rules != self._rules:
            # The change feed reports only files that changed: the others are judged anew by a full listing.
            log.info("what can be indexed changed (formats, max_file_mb or mime_allowlist): listing in full")
        else:
            carried = Unapplied(cursor, False, {}) if applied else self.store.unapplied(state)
            result = self._incremental(state.tree_token, carried, known)
            if result is not None:
                return result
        return self._full(cursor)

    @contextlib.contextmanager
    def fetch(self, ref: DocumentRef) -> Iterator[Path]:
        export_mime = EXPORTS[ref.mime_type][0] if ref.mime_type in EXPORTS else None
        suffix = Path(ref.parse_as).suffix or ".bin"
        fd, name = tempfile.mkstemp(prefix="gdrive-", suffix=suffix)
        path = Path(name)
        spent = QuotaMeter()
        try:
            try:
                with self._downloads, os.fdopen(fd, "wb") as out:
                    self.api.download(ref.doc_id, export_mime, out, f"download of {ref.name!r} ({ref.doc_id})", spent)
            except DriveApiError as exc:
                raise FetchError(fetch_reason(exc)) from exc
            finally:
                # What the admission booked for it (an export's assumed size) becomes what it really cost.
                self.budget.settle(self.api.project, ref.doc_id, spent.downloads, utc_day(self._clock()))
            yield path
        finally:
            path.unlink(missing_ok=True)


def _sync_clock() -> datetime:
    """The clock a Drive sync goes by (flows/rag/pacing.py's, which tests move); imported late, since pacing
    imports the source's modules."""
    from flows.rag import pacing

    return pacing.clock()
