"""Paced backfill: costs, priority, admission under a daily budget, the ETA, the budget ledger, and a simulated
Drive of 1,000,000 files / 60 TB paced over days with a clock the test controls."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import overload

import pytest
from google.auth.credentials import AnonymousCredentials

from flows.common.db import Database
from flows.common.retry import RetryPolicy
from flows.rag.backfill import pace_plan, render_backfill
from flows.rag.config import load_config
from flows.rag.duplicates import originals
from flows.rag.pacing import pace_sync
from flows.rag.plan import SyncPlan
from flows.rag.resources import open_resources
from flows.rag.sources.base import DocumentRef
from flows.rag.sources.gdrive_api import DriveApi
from flows.rag.sources.gdrive_budget import QuotaDays
from flows.rag.sources.gdrive_client import DriveService
from flows.rag.sources.gdrive_quota import (
    ASSUMED_EXPORT_BYTES,
    DAILY_EGRESS_BYTES,
    DAILY_UNITS,
    DOWNLOAD_UNITS,
    Usage,
    admit,
    download_cost,
    eta,
    prioritized,
)
from testkit.gdrive_server import GDOC, SimulatedDrive

MB = 10**6
T0 = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)


def ref(doc_id: str, size: int | None = 10 * MB, mime: str = "application/pdf", **kw: object) -> DocumentRef:
    fields: dict = {"modified": "2026-01-01T00:00:00.000Z"} | kw
    return DocumentRef(doc_id, doc_id, doc_id, mime, "v1", size, **fields)


def test_download_cost_is_bytes_and_one_download_per_chunk() -> None:
    assert download_cost(ref("a", 20 * 2**20)) == Usage(3 * DOWNLOAD_UNITS, 20 * 2**20)  # three 8 MiB chunks
    assert download_cost(ref("b", 0)) == Usage(DOWNLOAD_UNITS, 0)
    assert download_cost(ref("c", None, GDOC)) == Usage(DOWNLOAD_UNITS, ASSUMED_EXPORT_BYTES)
    assert download_cost(ref("d", 5 * 10**9, skip_reason="too big")) == Usage()  # never downloaded


def test_priority_text_first_then_most_recent() -> None:
    refs = [
        ref("old-pdf", modified="2026-01-01T00:00:00.000Z"),
        ref("new-video", mime="video/mp4", modified="2026-03-01T00:00:00.000Z"),
        ref("new-doc", None, GDOC, modified="2026-02-01T00:00:00.000Z"),
        ref("no-time", modified=None),
        ref("old-zip", mime="application/zip", modified="2025-01-01T00:00:00.000Z"),
    ]
    ids = lambda order: [r.doc_id for r in prioritized(refs, order)]  # noqa: E731
    assert ids("text-first") == ["new-doc", "old-pdf", "no-time", "new-video", "old-zip"]
    assert ids("recent") == ["new-video", "new-doc", "old-pdf", "old-zip", "no-time"]
    assert ids("listing") == [r.doc_id for r in refs]


def test_admission_keeps_the_order_and_stops_at_the_budget() -> None:
    refs = [ref("a", 40 * MB), ref("skip", 10**9, skip_reason="x"), ref("b", 40 * MB), ref("c", 40 * MB)]
    got = admit(refs, Usage(10**9, 100 * MB), day_fresh=True)
    assert [r.doc_id for r in got.admitted] == ["a", "skip", "b"]
    assert [r.doc_id for r in got.deferred] == ["c"]
    assert got.cost.bytes == 80 * MB and got.deferred_cost.bytes == 40 * MB
    # A file dearer than a whole day goes alone on a fresh day, never on a day already spent.
    huge = [ref("huge", 300 * MB), ref("small", MB)]
    assert [r.doc_id for r in admit(huge, Usage(10**9, 100 * MB), day_fresh=True).admitted] == ["huge"]
    assert admit(huge, Usage(10**9, 100 * MB), day_fresh=False).admitted == []


def test_eta_is_now_when_today_holds_it_else_the_day_that_does() -> None:
    budget = Usage(DAILY_UNITS, 1000)
    assert eta(Usage(0, 300), budget, Usage(0, 700), T0) == T0
    midnight = datetime(2026, 3, 1, tzinfo=UTC)
    assert eta(Usage(0, 301), budget, Usage(0, 700), T0) == midnight + timedelta(days=1)
    assert eta(Usage(0, 2300), budget, Usage(0, 700), T0) == midnight + timedelta(days=2)
    assert eta(Usage(0, 2301), budget, Usage(0, 700), T0) == midnight + timedelta(days=3)
    assert eta(Usage(2 * DAILY_UNITS, 0), budget, Usage(), T0) == midnight + timedelta(days=1)  # units bind


def test_pace_plan_cuts_new_and_changed_in_priority_order() -> None:
    plan = SyncPlan(
        new=[ref("n-old", modified="2026-01-01T00:00:00.000Z"), ref("n-new", modified="2026-02-01T00:00:00.000Z")],
        changed=[ref("c-mid", modified="2026-01-15T00:00:00.000Z")],
        removed=["gone"],
    )
    paced, admission = pace_plan(plan, "recent", Usage(10**9, 25 * MB), day_fresh=True)
    assert [r.doc_id for r in paced.to_ingest] == ["n-new", "c-mid"]
    assert [r.doc_id for r in admission.deferred] == ["n-old"]
    assert paced.removed == ["gone"]  # removals download nothing: never held back


def test_copies_by_checksum_are_admitted_at_no_cost() -> None:
    def pdf(doc_id: str, md5: str) -> DocumentRef:
        return DocumentRef(doc_id, f"{doc_id}.pdf", doc_id, "application/pdf", md5, 40 * MB, "2026-01-01T00:00:00Z")

    indexed = originals([("gdrive:x", "old", "md5:aa", 40 * MB, "application/pdf", "Old.pdf", 3, 0)])
    plan = SyncPlan(new=[pdf("copy-of-old", "md5:aa"), pdf("first", "md5:bb"), pdf("second", "md5:bb")])
    plan.changed.append(pdf("other", "md5:cc"))
    paced, admission = pace_plan(plan, "listing", Usage(10**9, 50 * MB), True, indexed)
    # One download's worth of budget admits the first of a content and every copy; the next download waits.
    assert [r.doc_id for r in paced.to_ingest] == ["copy-of-old", "first", "second"]
    assert [r.doc_id for r in admission.deferred] == ["other"]
    assert admission.cost == admission.bookings["first"] == download_cost(plan.new[1])
    assert admission.bookings.keys() == {"first"} and admission.deferred_cost.bytes == 40 * MB


def test_a_download_trues_the_day_it_was_booked_on_up_to_what_it_spent(ledger_url: str) -> None:
    days = QuotaDays(Database(ledger_url))
    export, pdf = Usage(DOWNLOAD_UNITS, ASSUMED_EXPORT_BYTES), Usage(2 * DOWNLOAD_UNITS, 10 * MB)
    days.reserve("p", "2026-03-01", lambda used: {"doc": export, "pdf": pdf})
    assert days.used("p", "2026-03-01") == export + pdf
    days.settle("p", "doc", Usage(2 * DOWNLOAD_UNITS, 9 * 2**20), "2026-03-02")  # larger than assumed, after midnight
    days.settle("p", "pdf", Usage(DOWNLOAD_UNITS, 0), "2026-03-01")  # failed at its first request: no bytes came
    assert days.used("p", "2026-03-01") == Usage(3 * DOWNLOAD_UNITS, 9 * 2**20)
    assert days.used("p", "2026-03-02") == Usage()
    days.settle("p", "doc", Usage(DOWNLOAD_UNITS, MB), "2026-03-02")  # booked at nothing (a copy), downloaded anyway
    assert days.used("p", "2026-03-02") == Usage(DOWNLOAD_UNITS, MB)


class FakeDriveSource:
    """What pace_sync needs of a Drive source: its id and its metered client."""

    source_id = "gdrive:root0"

    def __init__(self) -> None:
        class Free:
            def acquire(self, units: int) -> None:
                pass

        self.api = DriveApi(DriveService(AnonymousCredentials(), "http://127.0.0.1:1"), RetryPolicy(), Free())


def test_a_paced_sync_books_the_day_and_the_next_day_goes_on(tmp_path: Path, ledger_url: str) -> None:
    resources = open_resources(
        load_config({"data_dir": tmp_path, "ledger_url": ledger_url, "drive_daily_bytes": 250 * MB})
    )
    db = resources.db
    src = FakeDriveSource()
    src.api.meter.charge("files.list")  # the listing's call: booked with the day too
    plan = SyncPlan(new=[ref(f"f{i}", 100 * MB) for i in range(5)])

    paced, status = pace_sync(resources, src, plan, T0)
    assert status is not None and status.paced
    assert [r.doc_id for r in paced.to_ingest] == ["f0", "f1"] and status.remaining_files == 3
    assert QuotaDays(db).used("default", "2026-03-01") == Usage(100 + 2 * 12 * DOWNLOAD_UNITS, 200 * MB)
    assert status.eta == datetime(2026, 3, 2, tzinfo=UTC)  # 300 MB left, 50 MB of it today, 250 MB a day
    assert "remaining | 3 | 0.30 GB" in render_backfill(status)

    later, again = pace_sync(resources, src, plan, T0 + timedelta(hours=5))
    assert later.to_ingest == [] and again is not None and again.remaining_files == 5  # the day is spent

    rest = SyncPlan(new=plan.new[2:])  # the next day's plan: the first two are indexed by then
    nxt, tomorrow = pace_sync(resources, src, rest, T0 + timedelta(days=1))
    assert [r.doc_id for r in nxt.to_ingest] == ["f2", "f3"] and tomorrow is not None
    assert tomorrow.used_today.bytes == 200 * MB and tomorrow.day == "2026-03-02"


class SimRef:
    """What admission reads of a DocumentRef, made cheaply: a million of them are made per simulation."""

    __slots__ = ("doc_id", "size", "skip_reason")

    def __init__(self, doc_id: str, size: int | None, skip_reason: str | None) -> None:
        self.doc_id, self.size, self.skip_reason = doc_id, size, skip_reason


class Listing(Sequence[SimRef]):
    """A simulated Drive's listing, made on access: admission reads only what it admits."""

    def __init__(self, drive: SimulatedDrive, start: int = 0, stop: int | None = None) -> None:
        self.drive, self.start, self.stop = drive, start, drive.files if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def _ref(self, i: int) -> SimRef:
        mime, size = self.drive.CYCLE[i % len(self.drive.CYCLE)]
        return SimRef(f"s{i:08d}", size, "file is over the limit" if mime == "video/mp4" else None)

    def __iter__(self) -> Iterator[SimRef]:
        return map(self._ref, range(self.start, self.stop))

    @overload
    def __getitem__(self, key: int) -> SimRef: ...
    @overload
    def __getitem__(self, key: slice) -> Listing: ...
    def __getitem__(self, key: int | slice) -> SimRef | Listing:
        if isinstance(key, slice):
            first, last, _ = key.indices(len(self))
            return Listing(self.drive, self.start + first, self.start + last)
        if not 0 <= key < len(self):
            raise IndexError(key)
        return self._ref(self.start + key)


@pytest.mark.slow
def test_a_60_tb_drive_is_paced_a_day_at_a_time_resumes_in_order_and_meets_its_eta() -> None:
    """Hourly runs against 1 TB a day: no day over budget, each run goes on where the last stopped, every file
    admitted once, and the first run's ETA names the day the last file is admitted."""
    drive = SimulatedDrive()
    assert drive.downloaded_bytes(0, drive.files) == 60 * 10**12
    budget = Usage(DAILY_UNITS, DAILY_EGRESS_BYTES)
    days: dict[str, Usage] = {}
    remaining: Sequence[DocumentRef] = Listing(drive)  # type: ignore[assignment]
    admitted, predicted, now = 0, None, T0
    while len(remaining):
        day = now.date().isoformat()
        used = days.get(day, Usage())
        got = admit(remaining, budget - used, day_fresh=used.bytes == 0)
        if got.admitted:
            assert got.admitted[0].doc_id == f"s{admitted:08d}"  # resumes exactly where the last run stopped
            admitted += len(got.admitted)
        days[day] = used + got.cost
        assert days[day].fits(budget)
        if predicted is None:
            predicted = eta(Usage(0, drive.downloaded_bytes(admitted, drive.files)), budget, days[day], now)
        remaining = got.deferred
        last_day, now = now, now + timedelta(hours=1)
    assert admitted == drive.files
    assert len(days) in (60, 61)  # 60 TB at 1 TB a day; each day leaves less than one file unused
    assert predicted is not None and predicted.date() <= last_day.date() <= predicted.date() + timedelta(days=1)
    assert max(u.units for u in days.values()) < DAILY_UNITS  # bytes bind, not units, for files this size
    assert sum(u.bytes for u in days.values()) == 60 * 10**12


@pytest.mark.parametrize("order", ["text-first", "recent", "listing"])
def test_the_order_is_a_setting(order: str, tmp_path: Path) -> None:
    assert load_config({"data_dir": tmp_path, "backfill_order": order}).backfill_order == order
