"""Drive quota accounting, pure: what each Drive call costs in quota units, what a download costs in bytes, the
in-process rate limiter, and the order and admission of a paced backfill under a daily budget.

Google meters the Drive API per Google Cloud project in quota units per minute (1,000,000 per project, 325,000 per
user per project), in units per day (400,000,000 per project: the daily billing threshold) and in egress bytes per
day (1 TB per project) before charges apply; each method costs a published number of units. Source:
developers.google.com/workspace/drive/api/guides/limits ("Drive API quotas", "Daily billing threshold", "Per-method
quota usage"). Where that page names no cost, the assumption is a named constant below.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Literal, Protocol

from flows.rag.sources.base import DocumentRef

# Per-method quota usage as published: reading an item 5, listing items 100, downloading an item 200, other 5.
READ_UNITS, LIST_UNITS, DOWNLOAD_UNITS, OTHER_UNITS = 5, 100, 200, 5
METHOD_UNITS: dict[str, int] = {
    "files.get": READ_UNITS,
    "drives.get": READ_UNITS,
    "permissions.get": READ_UNITS,
    "revisions.get": READ_UNITS,
    "changes.getStartPageToken": OTHER_UNITS,
    "files.list": LIST_UNITS,
    "changes.list": LIST_UNITS,
    "drives.list": LIST_UNITS,
    "permissions.list": LIST_UNITS,
    "revisions.list": LIST_UNITS,
    "files.get_media": DOWNLOAD_UNITS,
    "files.export": DOWNLOAD_UNITS,
    "files.download": DOWNLOAD_UNITS,
}
DOWNLOAD_METHODS = frozenset({"files.get_media", "files.export", "files.download"})
# Assumption: a method the table does not name costs what a listing does, the dearest kind short of a download.
UNLISTED_METHOD_UNITS = LIST_UNITS
# Assumption: Google does not say whether each ranged request of a chunked download is one "download"; each request
# (one chunk of this size, flows/rag/sources/gdrive_api.py) is charged as one, which can only over-count.
DOWNLOAD_CHUNK_BYTES = 8 * 2**20
# Assumption: Drive tells no export's size before making it (exports stop at 10 MB): one is budgeted at this size.
ASSUMED_EXPORT_BYTES = 2 * 2**20

PROJECT_UNITS_PER_MINUTE = 1_000_000
USER_UNITS_PER_MINUTE = 325_000
# The shared rate limit's default: one sync account is one Drive user, so its per-user quota binds first.
DEFAULT_UNITS_PER_MINUTE = USER_UNITS_PER_MINUTE
DAILY_UNITS = 400_000_000
DAILY_EGRESS_BYTES = 10**12  # 1 TB

DEFAULT_PROJECT = "default"  # credentials that name no Google project (a local test server, anonymous)
_LIMIT_NAME_BAD = re.compile(r"[/%&<>\s]")  # characters Prefect refuses in a concurrency limit's name

BackfillOrder = Literal["text-first", "recent", "listing"]


def units_for(method: str) -> int:
    return METHOD_UNITS.get(method, UNLISTED_METHOD_UNITS)


def limit_name(project: str) -> str:
    """The Prefect global concurrency limit that paces one Google project's Drive units."""
    return "drive-units:" + _LIMIT_NAME_BAD.sub("-", project or DEFAULT_PROJECT)


@dataclass(frozen=True, slots=True)
class Usage:
    """Quota units and egress bytes."""

    units: int = 0
    bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.units + other.units, self.bytes + other.bytes)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.units - other.units, self.bytes - other.bytes)

    def fits(self, cap: Usage) -> bool:
        return self.units <= cap.units and self.bytes <= cap.bytes

    @property
    def empty(self) -> bool:
        return not self.units and not self.bytes


class QuotaMeter:
    """What Drive calls spent, thread-safe: downloads apart from the other calls, since a paced sync books a
    download's cost when it admits the document and trues it up once downloaded (flows/rag/sources/gdrive_budget.py),
    and the other calls when they are made. One meter per client, and one per download for its true-up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = Usage()
        self.downloads = Usage()
        self._booked_calls = Usage()

    def charge(self, method: str) -> int:
        """One request of ``method``; returns its units."""
        units = units_for(method)
        self._add(method, Usage(units, 0))
        return units

    def add_bytes(self, method: str, nbytes: int) -> None:
        self._add(method, Usage(0, nbytes))

    def _add(self, method: str, usage: Usage) -> None:
        with self._lock:
            if method in DOWNLOAD_METHODS:
                self.downloads += usage
            else:
                self.calls += usage

    def take_calls(self) -> Usage:
        """The non-download usage since the last take (to add to the day's ledger once)."""
        with self._lock:
            new, self._booked_calls = self.calls - self._booked_calls, self.calls
        return new

    @property
    def total(self) -> Usage:
        return self.calls + self.downloads


class UnitLimiter(Protocol):
    """Blocks until ``units`` quota units may be spent (the shared Prefect rate limit, or a TokenBucket)."""

    def acquire(self, units: int) -> None: ...


class TokenBucket:
    """The in-process stand-in for the shared rate limit: ``per_minute`` units, refilled continuously, a burst of
    at most one minute's worth. ``acquire`` blocks until the units are there; clock and sleep are injectable."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock, self._sleep = clock, sleep
        self._level = self.capacity
        self._at = clock()
        self._lock = threading.Lock()

    def acquire(self, units: int) -> None:
        want = min(float(units), self.capacity)  # a call dearer than a minute's worth waits for a full bucket
        while True:
            with self._lock:
                now = self._clock()
                self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
                self._at = now
                if self._level >= want:
                    self._level -= want
                    return
                wait = (want - self._level) / self.rate
            self._sleep(wait)


# -- paced backfill ---------------------------------------------------------------------------------------------

# Types whose text a parser reads straight away; the rest (images to OCR, archives, media) come after them.
_TEXT_MIME_PREFIXES = ("text/", "application/vnd.google-apps.")
_TEXT_MIMES = frozenset(
    {
        "application/pdf",
        "application/msword",
        "application/rtf",
        "application/epub+zip",
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "message/rfc822",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.presentation",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
    }
)


def is_text_bearing(mime: str | None) -> bool:
    mime = mime or ""
    return (
        mime in _TEXT_MIMES
        or mime.startswith(_TEXT_MIME_PREFIXES)
        or mime.startswith("application/vnd.openxmlformats-officedocument.")
    )


def download_cost(ref: DocumentRef) -> Usage:
    """What fetching ``ref`` is estimated to cost: nothing when the listing already decided to skip it (never
    downloaded), else its bytes (an export's assumed) and one download per chunk."""
    return Usage(*_price(ref))


def _price(ref: DocumentRef) -> tuple[int, int]:
    """(units, bytes) of download_cost, without making a Usage: admission prices every document it reads."""
    if ref.skip_reason is not None:
        return 0, 0
    nbytes = ref.size if ref.size is not None else ASSUMED_EXPORT_BYTES
    return DOWNLOAD_UNITS * max(1, -(-nbytes // DOWNLOAD_CHUNK_BYTES)), nbytes


def prioritized(refs: Iterable[DocumentRef], order: BackfillOrder) -> list[DocumentRef]:
    """``refs`` in the order a paced backfill admits them. text-first: text-bearing types first, each group most
    recently modified first; recent: most recently modified first; listing: as listed. ISO-8601 UTC times sort as
    text; a file without one comes last of its group."""
    items = list(refs)
    if order == "listing":
        return items
    items.sort(key=lambda r: r.modified or "", reverse=True)  # stable: ties keep the listing's order
    if order == "text-first":
        items.sort(key=lambda r: not is_text_bearing(r.mime_type))
    return items


@dataclass(frozen=True)
class Admission:
    admitted: list[DocumentRef]
    deferred: Sequence[DocumentRef]  # the rest of the ordered plan, as given (a list: its slice)
    cost: Usage  # of the admitted downloads
    bookings: dict[str, Usage]  # each admitted download's cost by document id (its download trues it up)
    is_copy: Callable[[DocumentRef], bool] = lambda _: False  # asked in the plan's order

    @cached_property
    def deferred_cost(self) -> Usage:
        total = Usage()
        for ref in self.deferred:
            if not self.is_copy(ref):
                total += download_cost(ref)
        return total


def admit(
    ordered: Sequence[DocumentRef],
    left: Usage,
    day_fresh: bool,
    is_copy: Callable[[DocumentRef], bool] = lambda _: False,
) -> Admission:
    """The documents, in order, whose download cost fits in ``left``, up to the first that does not: the order is
    kept exactly, and what is left unused is less than one document (100 MB at the default max_file_mb, against a
    day's 1 TB). What the listing decided to skip and the copies (``is_copy``, asked in order: the first of a
    content is downloaded, its copies by checksum are not, flows/rag/duplicates.py) cost nothing and go with them.
    A document dearer than a whole day's budget would never fit: on a ``day_fresh`` day (no download booked yet)
    the first one goes even so. Time: O(admitted), so a run over a long backlog stays cheap."""
    units = nbytes = taken = 0
    bookings: dict[str, Usage] = {}
    for ref in ordered:
        price_units, price_bytes = (0, 0) if is_copy(ref) else _price(ref)
        over = units + price_units > left.units or nbytes + price_bytes > left.bytes
        if over and not (day_fresh and units == nbytes == 0):
            break
        units, nbytes, taken = units + price_units, nbytes + price_bytes, taken + 1
        if price_units or price_bytes:
            bookings[ref.doc_id] = Usage(price_units, price_bytes)
    return Admission(list(ordered[:taken]), ordered[taken:], Usage(units, nbytes), bookings, is_copy)


def utc_day(now: datetime) -> str:
    return now.astimezone(UTC).date().isoformat()


def eta(remaining: Usage, budget: Usage, used_today: Usage, now: datetime) -> datetime:
    """When a paced backfill admits the last of ``remaining``, with runs at least daily: now if today's rest of the
    budget holds it, else the start of the UTC day whose budget does."""
    if remaining.fits(budget - used_today):
        return now
    days = 0
    for want, left, per_day in (
        (remaining.bytes, budget.bytes - used_today.bytes, budget.bytes),
        (remaining.units, budget.units - used_today.units, budget.units),
    ):
        days = max(days, math.ceil(max(0, want - max(0, left)) / per_day))
    midnight = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), UTC)
    return midnight + timedelta(days=days)
