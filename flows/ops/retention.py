"""Which backups to keep: newest good backup per day, ISO week and month, for the last N of each (pure).

Rules that protect the data:
- only good (verified) backups count as keepers; a failed one never takes a slot, so a failure can never
  push a good backup out;
- the newest good backup is always kept, whatever the counts say;
- failed backups are pruned once older than ``bad_max_age`` (their record stays useful a while).
Periods count the periods that *have* a good backup, so a week without backups does not shorten history.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class BackupRecord:
    id: str
    created_at: datetime
    good: bool


@dataclass(frozen=True)
class Policy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 6
    bad_max_age: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        if min(self.daily, self.weekly, self.monthly) < 0:
            raise ValueError("retention counts must be >= 0")


def _newest_per_period(good: Sequence[BackupRecord], count: int, period: Callable[[datetime], Hashable]) -> set[str]:
    keep: set[str] = set()
    seen: list[Hashable] = []
    for rec in good:  # newest first
        bucket = period(rec.created_at)
        if bucket in seen:
            continue
        if len(seen) == count:
            break
        seen.append(bucket)
        keep.add(rec.id)
    return keep


def plan_retention(records: Sequence[BackupRecord], policy: Policy, now: datetime) -> tuple[set[str], set[str]]:
    """(ids to keep, ids to prune) for one series of backups (one database, one collection...)."""
    good = sorted((r for r in records if r.good), key=lambda r: r.created_at, reverse=True)
    keep: set[str] = set()
    if good:
        keep.add(good[0].id)
    keep |= _newest_per_period(good, policy.daily, lambda t: t.date())
    keep |= _newest_per_period(good, policy.weekly, lambda t: tuple(t.isocalendar())[:2])
    keep |= _newest_per_period(good, policy.monthly, lambda t: (t.year, t.month))
    prune = {r.id for r in good if r.id not in keep}
    for r in records:
        if not r.good:
            if now - r.created_at > policy.bad_max_age:
                prune.add(r.id)
            else:
                keep.add(r.id)
    return keep, prune
