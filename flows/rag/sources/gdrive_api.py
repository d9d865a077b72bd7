"""Drive v3 calls the source makes, each with field selection, paging, the retry policy and its quota charge.

Every request goes through :meth:`DriveApi.call` (or the download loop): it takes the method's quota units from the
project's rate limit, counts them and the bytes in ``meter``, then sends the request with the retry policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from googleapiclient.http import MediaIoBaseDownload

from flows.common.retry import RetryPolicy
from flows.rag.sources.gdrive_client import DriveApiError, DriveRateLimit, DriveService, call_with_retry
from flows.rag.sources.gdrive_quota import DOWNLOAD_CHUNK_BYTES, QuotaMeter, UnitLimiter
from flows.rag.sources.gdrive_refs import FILE_FIELDS, PERMISSION_FIELDS

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
ALL_DRIVES = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}


class DriveApi:
    """The Drive v3 calls of the source; every one rate-limited, charged, retried and turned into our errors."""

    def __init__(self, service: DriveService, retry: RetryPolicy, limiter: UnitLimiter | None = None) -> None:
        self.service = service
        self.retry = retry
        self.project = service.project
        self.limiter: UnitLimiter = limiter or DriveRateLimit(self.project)
        self.meter = QuotaMeter()
        self.api_calls = 0  # for the benchmark and tests

    def _charge(self, method: str) -> None:
        """One request of ``method``: its units, taken from the rate limit (each retried attempt is a request too)."""
        self.api_calls += 1
        self.limiter.acquire(self.meter.charge(method))

    def call(self, make: Callable[[Any], Any], what: str, method: str | None = None) -> Any:
        """``make(service)`` executed; ``method`` is the Drive method it calls (default: ``what``'s first word),
        which sets its quota units."""
        method = method or what.split()[0]

        def once() -> Any:
            self._charge(method)
            return make(self.service.get()).execute(num_retries=0)

        return call_with_retry(once, self.retry, what)

    def start_token(self) -> str:
        res = self.call(
            lambda s: s.changes().getStartPageToken(supportsAllDrives=True),
            "getStartPageToken",
            "changes.getStartPageToken",
        )
        return res["startPageToken"]

    def get_file(self, file_id: str) -> dict:
        return self.call(
            lambda s: s.files().get(fileId=file_id, fields=FILE_FIELDS, supportsAllDrives=True),
            f"files.get {file_id}",
        )

    def list_children(self, parents: list[str]) -> Iterator[dict]:
        clause = " or ".join(f"'{p}' in parents" for p in parents)
        query = f"({clause}) and trashed = false"
        page_token: str | None = None
        while True:
            res = self.call(
                lambda s, t=page_token: s.files().list(
                    q=query,
                    pageSize=PAGE_SIZE,
                    pageToken=t,
                    fields=f"nextPageToken,files({FILE_FIELDS})",
                    corpora="allDrives",
                    **ALL_DRIVES,
                ),
                "files.list",
            )
            yield from res.get("files", [])
            page_token = res.get("nextPageToken")
            if not page_token:
                return

    def read_changes(self, cursor: str) -> tuple[dict[str, dict], dict[str, dict], str] | None:
        """The latest change per file id and per shared drive id since ``cursor``, and the new token; None if
        the token is unusable."""
        files: dict[str, dict] = {}
        drives: dict[str, dict] = {}
        page_token = cursor
        fields = (
            "nextPageToken,newStartPageToken,"
            f"changes(changeType,fileId,driveId,removed,file({FILE_FIELDS}),drive(id,name))"
        )
        while True:
            try:
                res = self.call(
                    lambda s, t=page_token: s.changes().list(
                        pageToken=t, pageSize=PAGE_SIZE, fields=fields, includeRemoved=True, **ALL_DRIVES
                    ),
                    "changes.list",
                )
            except DriveApiError as exc:
                if exc.status in (400, 404, 410):
                    log.warning("change token rejected (%s): falling back to a full listing", exc)
                    return None
                raise
            for change in res.get("changes", []):
                if change.get("changeType") == "drive":  # a shared drive renamed, deleted or no longer shared
                    drives[change["driveId"]] = change
                elif change.get("fileId"):
                    files.pop(change["fileId"], None)  # keep the stream's order of last change
                    files[change["fileId"]] = change
            if res.get("newStartPageToken"):
                return files, drives, res["newStartPageToken"]
            page_token = res["nextPageToken"]

    def _pages(self, make: Callable[[Any, str | None], Any], what: str, key: str) -> Iterator[dict]:
        page_token: str | None = None
        while True:
            res = self.call(lambda s, t=page_token: make(s, t), what)
            yield from res.get(key, [])
            page_token = res.get("nextPageToken")
            if not page_token:
                return

    def head_revision_time(self, file_id: str) -> str | None:
        """The modifiedTime of the file's newest revision (revisions.list lists oldest first); None when its
        revisions cannot be read (Drive lets only some roles see a file's history)."""
        newest: dict = {}
        try:
            for newest in self._pages(  # noqa: B007 (the loop keeps the last page's last revision)
                lambda s, t: s.revisions().list(
                    fileId=file_id, pageSize=1000, pageToken=t, fields="nextPageToken,revisions(id,modifiedTime)"
                ),
                f"revisions.list {file_id}",
                "revisions",
            ):
                pass
        except DriveApiError as exc:
            log.info("revisions of %s cannot be read (%s): its modifiedTime decides", file_id, exc)
            return None
        return newest.get("modifiedTime")

    def list_permissions(self, file_id: str) -> list[dict] | None:
        """The file's permissions (inherited ones included); None when this account may not read them."""
        try:
            return list(
                self._pages(
                    lambda s, t: s.permissions().list(
                        fileId=file_id,
                        pageSize=100,
                        pageToken=t,
                        fields=f"nextPageToken,permissions({PERMISSION_FIELDS})",
                        supportsAllDrives=True,
                    ),
                    f"permissions.list {file_id}",
                    "permissions",
                )
            )
        except DriveApiError as exc:
            log.info("permissions of %s cannot be read (%s): private to this account", file_id, exc)
            return None

    def get_drive(self, drive_id: str) -> dict:
        return self.call(lambda s: s.drives().get(driveId=drive_id), f"drives.get {drive_id}")

    def download(self, file_id: str, export_mime: str | None, out: Any, what: str, spent: QuotaMeter) -> None:
        """Stream the file (or its export) into ``out``, counting its requests and bytes in ``spent`` too (what
        this download cost, for its true-up: gdrive_budget.py), also when it fails midway; raises DriveApiError."""
        service = self.service.get()
        files = service.files()
        if export_mime:
            method, request = "files.export", files.export_media(fileId=file_id, mimeType=export_mime)
        else:
            method, request = "files.get_media", files.get_media(fileId=file_id, supportsAllDrives=True)
        # Chunks go straight to the file: memory stays flat whatever the file size; each chunk is one request.
        downloader = MediaIoBaseDownload(out, request, chunksize=DOWNLOAD_CHUNK_BYTES)

        def chunk() -> tuple[Any, bool]:
            self._charge(method)
            spent.charge(method)
            return downloader.next_chunk(num_retries=0)

        done, received = False, 0
        while not done:
            status, done = call_with_retry(chunk, self.retry, what)
            progress = status.resumable_progress if status is not None else received
            for meter in (self.meter, spent):
                meter.add_bytes(method, progress - received)
            received = progress
