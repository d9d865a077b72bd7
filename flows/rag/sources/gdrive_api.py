"""Drive v3 calls the source makes, each with field selection, paging and the retry policy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from googleapiclient.http import MediaIoBaseDownload

from flows.common.retry import RetryPolicy
from flows.rag.sources.gdrive_client import DriveApiError, DriveService, call_with_retry
from flows.rag.sources.gdrive_refs import FILE_FIELDS

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
ALL_DRIVES = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}


class DriveApi:
    """The Drive v3 calls of the source; every one counted, retried and turned into our errors."""

    def __init__(self, service: DriveService, retry: RetryPolicy) -> None:
        self.service = service
        self.retry = retry
        self.api_calls = 0  # for the benchmark and tests

    def call(self, make: Callable[[Any], Any], what: str) -> Any:
        def once() -> Any:
            self.api_calls += 1
            return make(self.service.get()).execute(num_retries=0)

        return call_with_retry(once, self.retry, what)

    def start_token(self) -> str:
        res = self.call(lambda s: s.changes().getStartPageToken(supportsAllDrives=True), "getStartPageToken")
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

    def get_drive(self, drive_id: str) -> dict:
        return self.call(lambda s: s.drives().get(driveId=drive_id), f"drives.get {drive_id}")

    def download(self, file_id: str, export_mime: str | None, out: Any, what: str) -> None:
        """Stream the file (or its export) into ``out``; raises DriveApiError."""
        service = self.service.get()
        files = service.files()
        if export_mime:
            request = files.export_media(fileId=file_id, mimeType=export_mime)
        else:
            request = files.get_media(fileId=file_id, supportsAllDrives=True)
        # Chunks of 8 MiB go straight to the file: memory stays flat whatever the file size.
        downloader = MediaIoBaseDownload(out, request, chunksize=8 * 2**20)
        done = False
        while not done:
            _, done = call_with_retry(lambda d=downloader: d.next_chunk(num_retries=0), self.retry, what)


def fetch_reason(exc: DriveApiError) -> str:
    """The one-line reason a download failed, as stored in the ledger."""
    if exc.reason == "exportSizeLimitExceeded":
        return "export is over Drive's 10 MB export limit (exportSizeLimitExceeded)"
    if exc.reason == "cannotExportFile":
        return "Drive cannot export this file (cannotExportFile)"
    if exc.status == 404:
        return "file not found in Drive (deleted, or no access)"
    if exc.status == 403:
        return f"access denied by Drive ({exc.reason or 'forbidden'})"
    return str(exc)
