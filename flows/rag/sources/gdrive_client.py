"""A thin Drive v3 client: the real google-api-python-client, built offline, with our own retry policy and the
Google project's shared rate limit.

The library's own ``num_retries`` ignores ``Retry-After`` and sleeps through a module-level ``time.sleep``,
so every call goes through :func:`call_with_retry` instead: truncated exponential backoff with full
jitter, at least ``Retry-After`` when the server sends one, and an injectable ``sleep`` for fast tests.
Before each request, :class:`DriveRateLimit` takes the call's quota units from the Prefect rate limit
``drive-units:<project>`` that every node and run share (flows/rag/sources/gdrive_quota.py says what a call costs).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httplib2
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import RefreshError
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from flows.common.errors import SwarmError
from flows.common.retry import RetryPolicy
from flows.rag.sources.gdrive_errors import DriveApiError
from flows.rag.sources.gdrive_quota import DEFAULT_PROJECT, DEFAULT_UNITS_PER_MINUTE, TokenBucket, limit_name

log = logging.getLogger(__name__)

T = TypeVar("T")

DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
RATE_REASONS = frozenset({"userRateLimitExceeded", "rateLimitExceeded"})


class DriveAuthError(SwarmError):
    """Credentials rejected (HTTP 401): nothing else can work, so the whole run fails."""


def error_reason(exc: HttpError) -> tuple[str | None, str]:
    """(reason, message) from a Drive error body such as ``{"error": {"errors": [{"reason": ...}]}}``."""
    try:
        body = json.loads(exc.content.decode("utf-8"))
        err = body.get("error", {}) if isinstance(body, dict) else {}
        errors = err.get("errors") or [{}]
        return errors[0].get("reason"), str(err.get("message") or errors[0].get("message") or "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None, ""


def is_retryable(status: int, reason: str | None) -> bool:
    return status == 429 or status >= 500 or (status == 403 and reason in RATE_REASONS)


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after") if exc.resp is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare for Drive; the exponential delay applies


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """Run one API call; retry quota and server errors, turn the rest into our errors."""
    attempt = 0
    while True:
        try:
            return fn()
        except RefreshError as exc:
            raise DriveAuthError(
                f"Google Drive credentials could not be refreshed during {what}: {str(exc).splitlines()[0]}"
            ) from exc
        except HttpError as exc:
            status = int(exc.resp.status)
            reason, message = error_reason(exc)
            if status == 401:
                raise DriveAuthError(
                    f"Google Drive rejected the credentials (HTTP 401) during {what}: check the"
                    " GoogleDriveCredentials block (key revoked, wrong subject, or token expired)"
                ) from exc
            if not is_retryable(status, reason) or attempt + 1 >= policy.max_attempts:
                detail = f"{reason}: {message}" if reason else message or "no details"
                raise DriveApiError(
                    f"{what} failed with HTTP {status} ({detail})", status=status, reason=reason
                ) from exc
            wait = policy.delay(attempt, _retry_after(exc))
        except (OSError, httplib2.HttpLib2Error) as exc:
            if attempt + 1 >= policy.max_attempts:
                raise DriveApiError(f"{what} failed: {exc}", status=0, reason="network") from exc
            wait = policy.delay(attempt, None)
        attempt += 1
        log.debug("retrying %s in %.2fs (attempt %d)", what, wait, attempt)
        policy.sleep(wait)


def api_base(endpoint: str | None) -> str | None:
    """``http://host:port`` or a full base → the base URL the library expects (``.../drive/v3/``)."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    if not base.endswith("/drive/v3"):
        base += "/drive/v3"
    return base + "/"


class DriveRateLimit:
    """Quota units per minute of one Google project, shared by every process that calls Drive for it.

    With a Prefect API whose global concurrency limit ``drive-units:<project>`` is a rate limit (slots decaying per
    second; deployments/bootstrap.py creates it), each call occupies its units there, so syncs on several nodes
    together stay under it. Without one (a plain local run, no Prefect server, or the limit not created yet) the
    units are paced in this process only, by a token bucket of ``units_per_minute``; the log says which. Decided
    at the first call. A 403/429 from Drive still backs off in :func:`call_with_retry` either way."""

    def __init__(self, project: str, units_per_minute: int = DEFAULT_UNITS_PER_MINUTE) -> None:
        self.name = limit_name(project)
        self._fallback = TokenBucket(units_per_minute)
        self._shared: bool | None = None
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """Whether the Prefect rate limit paces the calls (else this process's token bucket)."""
        with self._lock:
            if self._shared is None:
                self._shared = self._find_shared()
            return self._shared

    def acquire(self, units: int) -> None:
        if self.shared:
            from prefect.concurrency.sync import rate_limit

            rate_limit(self.name, occupy=units, strict=True)
        else:
            self._fallback.acquire(units)

    def _find_shared(self) -> bool:
        from prefect import get_client
        from prefect.exceptions import ObjectNotFound
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            log.info("no Prefect API: Drive calls of %s are paced in this process only", self.name)
            return False
        try:
            with get_client(sync_client=True) as client:
                limit = client.read_global_concurrency_limit_by_name(self.name)
        except ObjectNotFound:
            log.warning(
                "no rate limit %r on the Prefect server (run deployments.bootstrap): pacing Drive calls here",
                self.name,
            )
            return False
        except Exception as exc:  # an unreachable API: the local run goes on, paced here
            log.warning("Prefect API unreachable (%s): pacing Drive calls in this process only", exc)
            return False
        if not limit.active or not limit.slot_decay_per_second:
            log.warning("%r is inactive or not a rate limit (no slot decay): pacing Drive calls here", self.name)
            return False
        return True


_PROJECT_KEYS = ("quota_project_id", "project_id")  # the credentials' quota project first, a key's own project next


def quota_project(credentials: Any) -> str:
    """The Google project whose quota the calls count against (google-auth credentials), else DEFAULT_PROJECT."""
    return info_project({key: getattr(credentials, key, None) for key in _PROJECT_KEYS})


def info_project(info: dict[str, Any]) -> str:
    """The same from a key's or token's JSON (a saved GoogleDriveCredentials block's data)."""
    for key in _PROJECT_KEYS:
        value = info.get(key)
        if isinstance(value, str) and value:
            return value
    return DEFAULT_PROJECT


class DriveService:
    """One discovery-built service per thread (httplib2 connections are not thread-safe)."""

    def __init__(self, credentials: Any, endpoint: str | None, timeout_s: float = 120.0) -> None:
        self._credentials = credentials
        self._base = api_base(endpoint)
        self._timeout_s = timeout_s
        self._local = threading.local()

    @property
    def project(self) -> str:
        return quota_project(self._credentials)

    def get(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            service = self._build()
            self._local.service = service
        return service

    def _build(self) -> Any:
        http: Any = httplib2.Http(timeout=self._timeout_s)
        # Anonymous credentials (tests against a local server) cannot refresh: send no auth header.
        if self._credentials is not None and not isinstance(self._credentials, AnonymousCredentials):
            from google_auth_httplib2 import AuthorizedHttp

            http = AuthorizedHttp(self._credentials, http=http)
        options = {"api_endpoint": self._base} if self._base else None
        # static_discovery: the discovery document bundled with the library; no network at build time.
        return build("drive", "v3", http=http, static_discovery=True, cache_discovery=False, client_options=options)
