"""Paced backfill, pure: the part of a sync's plan that today's Drive budget admits, and where the backfill stands.

A first sync of a large Drive cannot download everything in a day (1 TB of egress per Google project per day before
charges, flows/rag/sources/gdrive_quota.py). A sync admits, in priority order, the documents whose downloads fit
in what is left of the UTC day's byte and unit budgets; the rest stays planned: the sync does not store its cursor,
so the next run lists (or re-reads from the source's pending changes) the same documents, finds the admitted ones
indexed and admits the next part. Nothing here reads a clock or a database: flows/rag/pacing.py does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flows.rag.duplicates import ContentKey, Contents, Original
from flows.rag.plan import SyncPlan
from flows.rag.sources.gdrive_quota import Admission, BackfillOrder, Usage, admit, eta, prioritized

_TB = 10**12
_GB = 10**9


@dataclass(frozen=True, slots=True)
class BackfillStatus:
    """Where a paced backfill stands after this run's admission."""

    project: str
    day: str  # the UTC day the budget is for
    admitted_files: int
    admitted_bytes: int
    remaining_files: int  # planned and left for later runs
    remaining_bytes: int
    done_files: int  # the source's documents the ledger recorded done (indexed, skipped, failed) before this run
    done_bytes: int
    used_today: Usage  # this project's usage today, this run's admitted downloads included
    budget: Usage
    eta: datetime  # when a run admits the last remaining document

    @property
    def paced(self) -> bool:
        """Whether the budget held documents back (then the sync keeps its cursor where it was)."""
        return self.remaining_files > 0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["eta"] = self.eta.isoformat(timespec="seconds")
        out["paced"] = self.paced
        return out


def pace_plan(
    plan: SyncPlan,
    order: BackfillOrder,
    left: Usage,
    day_fresh: bool,
    indexed: Mapping[ContentKey, Original] | None = None,
) -> tuple[SyncPlan, Admission]:
    """The plan cut to what ``left`` admits, its documents in priority order (so a run that fails midway has done
    the most wanted first); removals and renames are never held back: they download nothing, and neither does a
    copy of content ``indexed`` or admitted before it (flows/rag/duplicates.py), which costs nothing."""
    admission = admit(prioritized(plan.to_ingest, order), left, day_fresh, Contents(indexed or {}).is_copy)
    new_ids = {ref.doc_id for ref in plan.new}
    paced = dataclasses.replace(
        plan,
        new=[ref for ref in admission.admitted if ref.doc_id in new_ids],
        changed=[ref for ref in admission.admitted if ref.doc_id not in new_ids],
    )
    return paced, admission


def backfill_status(
    project: str,
    day: str,
    admission: Admission,
    done: tuple[int, int],
    used_today: Usage,
    budget: Usage,
    now: datetime,
) -> BackfillStatus:
    return BackfillStatus(
        project=project,
        day=day,
        admitted_files=len(admission.admitted),
        admitted_bytes=admission.cost.bytes,
        remaining_files=len(admission.deferred),
        remaining_bytes=admission.deferred_cost.bytes,
        done_files=done[0],
        done_bytes=done[1],
        used_today=used_today,
        budget=budget,
        eta=eta(admission.deferred_cost, budget, used_today, now),
    )


def _bytes(n: int) -> str:
    return f"{n / _TB:.2f} TB" if n >= _TB else f"{n / _GB:.2f} GB"


def _share(used: int, cap: int) -> str:
    return f"{100 * used / cap:.0f}%" if cap else "-"


def render_backfill(status: BackfillStatus) -> str:
    """The rag-backfill artifact: done and remaining files and bytes, today's budget used, the ETA."""
    used, budget = status.used_today, status.budget
    state = "paced: the rest waits for the next runs" if status.paced else "nothing held back"
    return "\n".join(
        [
            f"# Drive backfill of project `{status.project}` on {status.day} (UTC)",
            "",
            f"{state}; all admitted by **{status.eta.isoformat(timespec='minutes')}** (ETA)",
            "",
            "| | files | bytes |",
            "|---|---:|---:|",
            f"| done before this run | {status.done_files:,} | {_bytes(status.done_bytes)} |",
            f"| admitted this run | {status.admitted_files:,} | {_bytes(status.admitted_bytes)} |",
            f"| remaining | {status.remaining_files:,} | {_bytes(status.remaining_bytes)} |",
            "",
            "| budget today | used | of | share |",
            "|---|---:|---:|---:|",
            f"| egress | {_bytes(used.bytes)} | {_bytes(budget.bytes)} | {_share(used.bytes, budget.bytes)} |",
            f"| quota units | {used.units:,} | {budget.units:,} | {_share(used.units, budget.units)} |",
        ]
    )
