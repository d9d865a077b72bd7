"""A local Drive v3 server (127.0.0.1, one thread) for the subset the Drive source calls.

It holds a mutable in-memory drive, records every mutation in a change log the way ``changes.list``
reports it (latest change per file or shared drive, ``removed`` for permanent deletes and lost drives),
and injects faults on demand.
The real google-api-python-client talks to it through ``client_options={"api_endpoint": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
GDOC = "application/vnd.google-apps.document"
NATIVE = "application/vnd.google-apps."
EXPORT_LIMIT = 10 * 2**20
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(seq: int) -> str:
    """A change's time as Drive writes it (RFC 3339, milliseconds, Z): one second per change, so later is larger."""
    return (_EPOCH + timedelta(seconds=seq)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# "root" is Drive's alias of My Drive's root folder, which has a real id of its own: files.get("root") answers
# with that id and My Drive's items name it as their parent (developers.google.com/workspace/drive/api/guides/folder).
MY_DRIVE_ALIAS = "root"


@dataclass
class FakeFile:
    id: str
    name: str
    mime: str
    parent: str | None
    content: bytes = b""
    version: int = 1
    modified: int = 0
    trashed: bool = False
    drive_id: str | None = None
    target: str | None = None  # shortcuts
    export_size: int | None = None  # pretend size of the export (exportSizeLimitExceeded)
    size_override: int | None = None  # pretend size in metadata (over-limit files, benchmark)
    md5: str | None = None
    target_mime: str = ""
    # Drive permission resources (type, role, emailAddress, domain, expirationTime) set on this file itself; what it
    # shows adds those of its folders (FakeDrive.permissions_of). Listed with the file only where Drive lists them:
    # this account may share it (``can_share``) and it is not in a shared drive; else by permissions.list.
    permissions: list[dict[str, Any]] = field(default_factory=list)
    can_share: bool = True
    revised: int = 0  # the change seq of the last content edit: the head revision's modifiedTime

    def resource(self, permissions: list[dict[str, Any]]) -> dict[str, Any]:
        """The file resource, ``permissions`` (its own and inherited ones) where Drive lists them."""
        res: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime,
            "parents": [self.parent] if self.parent else [],
            "trashed": self.trashed,
            "version": str(self.version),
            "modifiedTime": stamp(self.modified),
            "webViewLink": f"https://drive.google.com/file/d/{self.id}/view",
        }
        if self.drive_id:
            res["driveId"] = self.drive_id
        elif self.can_share:
            res["permissions"] = permissions
        if not self.mime.startswith(NATIVE):
            res["md5Checksum"] = self.md5 or hashlib.md5(self.content).hexdigest()
            res["size"] = str(self.size_override if self.size_override is not None else len(self.content))
            res["headRevisionId"] = f"r{self.version}"
        if self.mime == SHORTCUT and self.target:
            res["shortcutDetails"] = {"targetId": self.target, "targetMimeType": self.target_mime}
        return res


@dataclass
class FakeDrive:
    """The in-memory drive plus its change log; all mutations go through these methods."""

    files: dict[str, FakeFile] = field(default_factory=dict)
    drives: dict[str, str] = field(default_factory=dict)
    members: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # shared drive id -> member permissions
    lost_drives: set[str] = field(default_factory=set)  # shared drives this account no longer sees
    log: list[tuple[int, str]] = field(default_factory=list)  # (seq, file or shared drive id)
    seq: int = 1
    _ids: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    calls: dict[str, int] = field(default_factory=dict)  # requests served, by Drive method ("files.list", ...)
    my_drive: str = "0AFakeMyDriveRootUk9PVA"  # the real id behind the alias "root"
    # Every content request served: (file id, the export MIME type asked for, None for a plain download).
    downloads: list[tuple[str, str | None]] = field(default_factory=list)
    by_parent: dict[str, dict[str, None]] = field(default_factory=dict)  # parent -> ordered child ids

    def children(self, parent: str) -> list[FakeFile]:
        return [self.files[c] for c in self.by_parent.get(parent, {})]

    def resolve(self, file_id: str) -> str:
        return self.my_drive if file_id == MY_DRIVE_ALIAS else file_id

    def resource(self, f: FakeFile) -> dict[str, Any]:
        return f.resource(self.permissions_of(f))

    def permissions_of(self, f: FakeFile) -> list[dict[str, Any]]:
        """A file's own permissions, then those it inherits from each folder above it. A folder's sharing change
        moves every descendant's list while the change log records the folder alone; on a shared drive each
        permission tells where it comes from (permissionDetails, which Drive gives for shared drive items only)."""
        shown: list[dict[str, Any]] = []
        holder: FakeFile | None = f
        seen = 0
        while holder is not None and seen < 1000:
            for permission in holder.permissions:
                if f.drive_id:
                    detail = {"permissionType": "file", "role": permission.get("role"), "inherited": holder is not f}
                    if holder is not f:
                        detail["inheritedFrom"] = holder.id
                    permission = {**permission, "permissionDetails": [detail]}
                shown.append(permission)
            holder = self.files.get(holder.parent) if holder.parent else None
            seen += 1
        for member in self.members.get(f.drive_id or "", []):  # a shared drive's members read all of it
            detail = {"permissionType": "member", "role": member.get("role"), "inherited": True}
            shown.append({**member, "permissionDetails": [detail | {"inheritedFrom": f.drive_id}]})
        return shown

    def my_drive_resource(self) -> dict[str, Any]:
        return {"kind": "drive#file", "id": self.my_drive, "name": "My Drive", "mimeType": FOLDER, "parents": []}

    def _link(self, f: FakeFile) -> None:
        if f.parent:
            self.by_parent.setdefault(f.parent, {})[f.id] = None

    def _unlink(self, f: FakeFile) -> None:
        if f.parent:
            self.by_parent.get(f.parent, {}).pop(f.id, None)

    def _record(self, item_id: str) -> None:
        self.seq += 1
        self.log.append((self.seq, item_id))

    def _touch(self, f: FakeFile) -> None:
        self._record(f.id)
        f.version += 1
        f.modified = self.seq

    def new_id(self, prefix: str = "f") -> str:
        self._ids += 1
        return f"{prefix}{self._ids:07d}"

    def add(self, name: str, parent: str | None, mime: str = "text/plain", content: bytes = b"", **kw: Any) -> str:
        with self.lock:
            fid = kw.pop("id", None) or self.new_id("d" if mime == FOLDER else "f")
            drive_id = self._drive_of(parent)
            f = FakeFile(fid, name, mime, parent, content, drive_id=drive_id, **kw)
            self.files[fid] = f
            self._link(f)
            self._touch(f)
            f.revised = f.modified
            return fid

    def add_quiet(self, f: FakeFile) -> None:
        """Insert without a change record (bulk setup for the benchmark)."""
        self.files[f.id] = f
        self._link(f)

    def folder(self, name: str, parent: str | None) -> str:
        return self.add(name, parent, FOLDER)

    def shortcut(self, name: str, parent: str, target: str) -> str:
        return self.add(name, parent, SHORTCUT, target=target, target_mime=self.files[target].mime)

    def shared_drive(self, name: str) -> str:
        with self.lock:
            did = self.new_id("0A")
            self.drives[did] = name
            return did

    def rename_drive(self, did: str, name: str) -> None:
        with self.lock:
            self.drives[did] = name
            self._record(did)

    def add_member(self, did: str, kind: str, email: str, role: str = "reader") -> None:
        """A new member of a shared drive: the change feed reports the drive alone."""
        with self.lock:
            self.members.setdefault(did, []).append({"type": kind, "role": role, "emailAddress": email})
            self._record(did)

    def lose_drive(self, did: str) -> None:
        """This account loses access to a shared drive: it and its files vanish, and the change feed
        reports the drive alone (not each file)."""
        with self.lock:
            del self.drives[did]
            self.lost_drives.add(did)
            for fid in [f.id for f in self.files.values() if f.drive_id == did]:
                self._unlink(self.files.pop(fid))
            self._record(did)

    def _drive_of(self, parent: str | None) -> str | None:
        if parent is None:
            return None
        if parent in self.drives:
            return parent
        p = self.files.get(parent)
        return p.drive_id if p else None

    def modify(self, fid: str, content: bytes) -> None:
        with self.lock:
            self.files[fid].content = content
            self.files[fid].md5 = None
            self._touch(self.files[fid])
            self.files[fid].revised = self.files[fid].modified

    def rename(self, fid: str, name: str) -> None:
        with self.lock:
            self.files[fid].name = name
            self._touch(self.files[fid])

    def share(self, fid: str, kind: str, value: str = "", role: str = "reader", expires: str | None = None) -> None:
        """A sharing change: a new version and a change record, but modifiedTime and the revisions stay. On a
        folder, the change record is the folder's alone. ``expires``: the permission's expirationTime (RFC 3339),
        shown as it is even once past, as Drive may until it removes the permission."""
        key = {"user": "emailAddress", "group": "emailAddress", "domain": "domain"}.get(kind)
        extra = {"expirationTime": expires} if expires else {}
        with self.lock:
            self.files[fid].permissions.append({"type": kind, "role": role, **({key: value} if key else {}), **extra})
            self._reshared(self.files[fid])

    def unshare(self, fid: str, kind: str, value: str = "") -> None:
        with self.lock:
            f = self.files[fid]
            f.permissions = [
                p for p in f.permissions if (p["type"], p.get("emailAddress") or p.get("domain") or "") != (kind, value)
            ]
            self._reshared(f)

    def _reshared(self, f: FakeFile) -> None:
        self._record(f.id)
        f.version += 1

    def move(self, fid: str, parent: str) -> None:
        with self.lock:
            self._unlink(self.files[fid])
            self.files[fid].parent = parent
            self._link(self.files[fid])
            self.files[fid].drive_id = self._drive_of(parent)
            self._touch(self.files[fid])

    def trash(self, fid: str, trashed: bool = True) -> None:
        with self.lock:
            self.files[fid].trashed = trashed
            self._touch(self.files[fid])

    def delete(self, fid: str) -> None:
        with self.lock:
            self._unlink(self.files.pop(fid))
            self._record(fid)

    def effectively_trashed(self, f: FakeFile) -> bool:
        seen = 0
        while f is not None and seen < 1000:
            if f.trashed:
                return True
            f = self.files.get(f.parent) if f.parent else None  # type: ignore[assignment]
            seen += 1
        return False


@dataclass
class Faults:
    rate: float = 0.0  # share of API calls answered with a retryable error
    seed: int = 7
    injected: int = 0
    unauthorized: bool = False
    invalid_tokens: set[str] = field(default_factory=set)
    retry_after: str = "0"  # Retry-After sent with injected 429s
    media_delay_s: float = 0.0
    media_active: int = 0
    media_peak: int = 0
    media_lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)  # the same faults on every run

    def pick(self) -> tuple[int, str] | None:
        if self.rate and self._rng.random() < self.rate:
            self.injected += 1
            return [(429, "rateLimitExceeded"), (403, "userRateLimitExceeded"), (503, "backendError")][
                self.injected % 3
            ]
        return None


_PARENT_RE = re.compile(r"'([^']+)' in parents")
_MIME_RE = re.compile(r"mimeType\s*(=|!=)\s*'([^']+)'")


def _parents(q: str, drive: FakeDrive) -> list[str]:
    return [drive.resolve(p) for p in _PARENT_RE.findall(q)]


def _method(path: str, qs: dict[str, str]) -> str:
    """The Drive v3 method a request calls, as tests count them."""
    if path in ("files", "changes", "drives"):
        return f"{path}.list"
    if path == "changes/startPageToken":
        return "changes.getStartPageToken"
    if path.endswith("/export"):
        return "files.export"
    if path.endswith(("/revisions", "/permissions")):
        return path.rsplit("/", 1)[1] + ".list"
    resource = path.split("/")[0]
    return "files.get_media" if resource == "files" and qs.get("alt") == "media" else f"{resource}.get"


def _match(q: str, drive: FakeDrive, f: FakeFile) -> bool:
    parents = _parents(q, drive)
    if parents and f.parent not in parents:
        return False
    if re.search(r"trashed\s*=\s*false", q) and drive.effectively_trashed(f):
        return False
    return all((f.mime == mime) == (op == "=") for op, mime in _MIME_RE.findall(q))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, reason: str, message: str = "", headers: dict[str, str] | None = None) -> None:
        body = {
            "error": {
                "code": status,
                "message": message or reason,
                "errors": [{"reason": reason, "message": message or reason}],
            }
        }
        self._send(status, body, headers)

    media: bytes | None = None  # set by _route; sent after the drive lock is released

    def do_GET(self) -> None:
        self.media = None
        self._get_locked()
        if self.media is not None:
            stats = self.server.faults
            with stats.media_lock:
                stats.media_active += 1
                stats.media_peak = max(stats.media_peak, stats.media_active)
            try:
                time.sleep(stats.media_delay_s)  # lets tests observe how many downloads overlap
                self._media(self.media)
            finally:
                with stats.media_lock:
                    stats.media_active -= 1

    def _get_locked(self) -> None:
        url = urlparse(self.path)
        qs = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.removeprefix("/drive/v3/")
        drive, faults = self.server.drive, self.server.faults
        with drive.lock:
            method = _method(path, qs)
            drive.calls[method] = drive.calls.get(method, 0) + 1
            if faults.unauthorized:
                return self._error(401, "authError", "Invalid Credentials")
            fault = faults.pick()
            if fault:
                headers = {"Retry-After": faults.retry_after} if fault[0] == 429 else None
                return self._error(fault[0], fault[1], headers=headers)
            try:
                self._route(path, qs, drive, faults)
            except KeyError:
                self._error(404, "notFound", "File not found")

    def _route(self, path: str, qs: dict[str, str], drive: FakeDrive, faults: Faults) -> None:
        if path == "files":
            return self._list(qs, drive)
        if path == "changes/startPageToken":
            return self._send(200, {"startPageToken": str(drive.seq + 1)})
        if path == "changes":
            return self._changes(qs, drive, faults)
        if path == "drives":
            return self._send(200, {"drives": [{"id": i, "name": n} for i, n in drive.drives.items()]})
        if path.startswith("drives/"):
            did = path.split("/")[1]
            if did not in drive.drives:
                return self._error(404, "notFound", f"Shared drive not found: {did}")
            return self._send(200, {"id": did, "name": drive.drives[did]})
        listed = re.fullmatch(r"files/([^/]+)/(revisions|permissions)", path)
        if listed:
            return self._file_list(drive, drive.files[drive.resolve(listed.group(1))], listed.group(2))
        m = re.fullmatch(r"files/([^/]+)(/export)?", path)
        if not m:
            return self._error(404, "notFound", f"no route {path}")
        file_id = drive.resolve(m.group(1))
        if file_id == drive.my_drive and not m.group(2) and qs.get("alt") != "media":
            return self._send(200, drive.my_drive_resource())
        f = drive.files[file_id]
        if m.group(2):
            if not f.mime.startswith(NATIVE) or f.mime == FOLDER:
                return self._error(403, "fileNotExportable", "Only Google Docs can be exported")
            if f.export_size == -1:
                return self._error(403, "cannotExportFile", "This file cannot be exported")
            if (f.export_size or len(f.content)) > EXPORT_LIMIT:
                return self._error(403, "exportSizeLimitExceeded", "This file is too large to be exported.")
            drive.downloads.append((f.id, qs.get("mimeType")))
            self.media = f.content
            return None
        if qs.get("alt") == "media":
            if f.mime.startswith(NATIVE):
                return self._error(403, "fileNotDownloadable", "Use Export with Docs Editors files.")
            drive.downloads.append((f.id, None))
            self.media = f.content
            return None
        return self._send(200, drive.resource(f))

    def _file_list(self, drive: FakeDrive, f: FakeFile, what: str) -> None:
        """revisions.list (the head revision only) and permissions.list: a shared drive's files answer both; in My
        Drive only an account that may share the file, as a viewer sees neither its sharing nor its history."""
        if not (f.can_share or (f.drive_id and what == "permissions")):
            return self._error(403, "insufficientFilePermissions", "The user does not have sufficient permissions")
        if what == "permissions":
            return self._send(200, {"permissions": drive.permissions_of(f)})
        return self._send(200, {"revisions": [{"id": f"r{f.revised}", "modifiedTime": stamp(f.revised)}]})

    def _media(self, content: bytes) -> None:
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
        if not m or not content:
            return self._send(200, content)
        start, end = int(m.group(1)), min(int(m.group(2)), len(content) - 1)
        part = content[start : end + 1]
        self._send(206, part, {"Content-Range": f"bytes {start}-{end}/{len(content)}"})

    def _page(self, items: list[Any], qs: dict[str, str]) -> tuple[list[Any], str | None]:
        size = min(int(qs.get("pageSize", 100)), 1000)
        start = int(qs.get("pageToken") or 0)
        nxt = str(start + size) if start + size < len(items) else None
        return items[start : start + size], nxt

    def _list(self, qs: dict[str, str], drive: FakeDrive) -> None:
        q = qs.get("q", "")
        parents = _parents(q, drive)
        pool = [f for p in parents for f in drive.children(p)] if parents else list(drive.files.values())
        items = sorted((f for f in pool if _match(q, drive, f)), key=lambda f: f.id)
        page, nxt = self._page(items, qs)
        body: dict[str, Any] = {"files": [drive.resource(f) for f in page]}
        if nxt:
            body["nextPageToken"] = nxt
        self._send(200, body)

    def _changes(self, qs: dict[str, str], drive: FakeDrive, faults: Faults) -> None:
        token = qs.get("pageToken", "")
        if token in faults.invalid_tokens or not token.isdigit() or int(token) > drive.seq + 1:
            return self._error(400, "invalid", "Invalid Value")
        start = int(token)
        size = min(int(qs.get("pageSize", 100)), 1000)
        latest: dict[str, int] = {}
        for seq, fid in drive.log:
            if seq >= start:
                latest[fid] = seq
        ordered = sorted(latest.items(), key=lambda kv: kv[1])
        page = ordered[:size]
        changes = []
        for fid, _seq in page:
            if fid in drive.drives or fid in drive.lost_drives:
                changes.append(_drive_change(drive, fid))
                continue
            f = drive.files.get(fid)
            change: dict[str, Any] = {
                "kind": "drive#change",
                "changeType": "file",
                "fileId": fid,
                "removed": f is None,
            }
            if f is not None:
                change["file"] = drive.resource(f)
            changes.append(change)
        body: dict[str, Any] = {"changes": changes}
        if len(ordered) > size:
            body["nextPageToken"] = str(page[-1][1] + 1)
        else:
            body["newStartPageToken"] = str(drive.seq + 1)
        self._send(200, body)


@dataclass(frozen=True)
class SimulatedDrive:
    """A generated Drive of ``files`` files for pacing tests: nothing stored, file ``i``'s type and size are
    ``CYCLE[i % 10]``, so a million files (60 TB) cost no memory and the bytes of any range have a closed form."""

    files: int = 1_000_000
    # (MIME type, size in bytes or None for a Google-native file): ten files, 600 MB with the export's 2 MiB.
    CYCLE = (
        ("application/pdf", 99_000_000),
        (GDOC, None),
        ("text/plain", 11_902_848),
        ("application/pdf", 99_000_000),
        ("video/mp4", 5_000_000_000),  # over max_file_mb: skipped at listing, never downloaded
        ("application/pdf", 99_000_000),
        ("application/pdf", 90_000_000),
        ("application/pdf", 99_000_000),
        ("application/pdf", 60_000_000),
        ("application/pdf", 40_000_000),
    )
    EXPORT_BYTES = 2 * 2**20

    def downloaded_bytes(self, start: int, stop: int) -> int:
        """What downloading files ``start``..``stop - 1`` moves (exports at EXPORT_BYTES, skipped videos none)."""
        per = [0 if mime == "video/mp4" else size or self.EXPORT_BYTES for mime, size in self.CYCLE]

        def upto(n: int) -> int:
            full, rest = divmod(n, len(per))
            return full * sum(per) + sum(per[:rest])

        return upto(stop) - upto(start)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, drive: FakeDrive, faults: Faults, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.drive = drive
        self.faults = faults


@contextmanager
def serve(
    drive: FakeDrive | None = None, faults: Faults | None = None, host: str = "127.0.0.1"
) -> Iterator[tuple[str, FakeDrive, Faults]]:
    """Run the server in a thread on ``host`` (the end-to-end test's hosts reach it on its bridge address);
    yields (endpoint URL, drive, faults)."""
    server = _Server(drive or FakeDrive(), faults or Faults(), host)
    thread = threading.Thread(target=server.serve_forever, name="fake-gdrive", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/", server.drive, server.faults
    finally:
        server.shutdown()
        server.server_close()


def _drive_change(drive: FakeDrive, drive_id: str) -> dict[str, Any]:
    change: dict[str, Any] = {
        "kind": "drive#change",
        "changeType": "drive",
        "driveId": drive_id,
        "removed": drive_id not in drive.drives,
    }
    if drive_id in drive.drives:
        change["drive"] = {"kind": "drive#drive", "id": drive_id, "name": drive.drives[drive_id]}
    return change
