"""A Drive answer the source turns into an outcome: kept apart from the client (gdrive_client.py), which imports the
Google libraries, so that the source's module names it without importing them."""

from __future__ import annotations

from flows.common.errors import SwarmError


class DriveApiError(SwarmError):
    """A non-retryable API answer (404, 403 other than rate limits, 400...)."""

    def __init__(self, message: str, status: int, reason: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


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
