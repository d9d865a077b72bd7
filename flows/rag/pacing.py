"""The step of rag-sync that paces a Drive plan under the day's budget (flows/rag/sources/gdrive_budget.py).

A paced sync books the cost of the downloads it admits when it admits them, in the same transaction that reads
what the day has used (the row is locked), so two syncs of one project planning at once cannot both spend the
same rest of the budget; each download then trues its booking up to what it really spent (GoogleDriveSource.fetch).
A copy by checksum of content already indexed, or admitted before it, is booked at nothing: it downloads nothing.
The Drive calls other than downloads (listing, the change feed) are added as made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flows.common.db import Database
from flows.rag.backfill import BackfillStatus, backfill_status, pace_plan
from flows.rag.config import RagConfig
from flows.rag.duplicates import key_of, originals
from flows.rag.ids import collection_name
from flows.rag.model_files import model_dimension
from flows.rag.plan import SyncPlan
from flows.rag.sources.base import Source
from flows.rag.sources.gdrive_budget import QuotaDays
from flows.rag.sources.gdrive_quota import Admission, Usage, utc_day

if TYPE_CHECKING:
    from flows.rag.resources import RagResources
    from flows.rag.sources.gdrive_api import DriveApi


def clock() -> datetime:
    """The time a Drive sync goes by: the budget's day, the day a download is trued up on, and when permissions
    expire (GoogleDriveSource's default clock). Tests replace it to move a sync on in time."""
    return datetime.now(UTC)


def drive_api(src: Source) -> DriveApi | None:
    """The Drive client of a Drive source (the one whose calls are charged), None for any other source."""
    api = getattr(src, "api", None)
    if api is None:
        return None
    from flows.rag.sources.gdrive_api import DriveApi  # the Google client libraries: only a Drive source has them

    return api if isinstance(api, DriveApi) else None


def budget_of(config: RagConfig) -> Usage:
    return Usage(units=config.drive_daily_units, bytes=config.drive_daily_bytes)


def book_calls(db: Database, api: DriveApi, now: datetime) -> None:
    """Add the Drive calls made since the last booking to today's usage (not downloads: booked when admitted,
    trued up when made)."""
    QuotaDays(db).add(api.project, utc_day(now), api.meter.take_calls())


def pace_sync(
    resources: RagResources, src: Source, plan: SyncPlan, now: datetime
) -> tuple[SyncPlan, BackfillStatus | None]:
    """A Drive plan cut to today's budget, its admitted downloads booked; any other source's plan as it is."""
    api = drive_api(src)
    if api is None:
        return plan, None
    ledger, config = resources.ledger, resources.config
    quota, day, budget = QuotaDays(ledger.db), utc_day(now), budget_of(config)
    quota.add(api.project, day, api.meter.take_calls())  # the listing's calls count against today's budget too
    # Where the batches will find copies by checksum: the collection this sync writes.
    model = config.embedding_model
    collection = collection_name(resources.collection, model, model_dimension(model))
    versions = [ref.version for ref in plan.to_ingest if key_of(ref) is not None]
    indexed = originals(ledger.indexed_with_versions(versions, model, collection))
    result: dict[str, tuple[SyncPlan, Admission]] = {}

    def decide(used: Usage) -> dict[str, Usage]:
        result["plan"] = pace_plan(plan, config.backfill_order, budget - used, used.bytes == 0, indexed)
        return result["plan"][1].bookings

    before = quota.reserve(api.project, day, decide)
    paced, admission = result["plan"]
    status = backfill_status(
        api.project, day, admission, ledger.done_totals(src.source_id), before + admission.cost, budget, now
    )
    return paced, status
