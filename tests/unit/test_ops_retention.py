"""Retention: which backups survive, and that failures never cost a good backup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.ops.retention import BackupRecord, Policy, plan_retention

NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def nightly(days: int, good: bool = True, start: datetime = NOW) -> list[BackupRecord]:
    return [BackupRecord(f"d{i}", start - timedelta(days=i), good) for i in range(days)]


def test_daily_weekly_monthly_keep_the_expected_backups() -> None:
    records = nightly(120)
    keep, prune = plan_retention(records, Policy(daily=7, weekly=4, monthly=3), NOW)
    assert keep | prune == {r.id for r in records} and not keep & prune
    assert {f"d{i}" for i in range(7)} <= keep
    kept = sorted((r.created_at for r in records if r.id in keep), reverse=True)
    # 7 dailies, then weeklies and monthlies reach back further but never beyond 3 months
    assert kept[-1] >= NOW - timedelta(days=92)
    assert len(keep) <= 7 + 4 + 3
    months = {(t.year, t.month) for t in kept}
    assert len(months) == 3


def test_newest_in_each_period_is_the_keeper() -> None:
    records = [
        BackupRecord("mon-early", datetime(2026, 11, 23, 1, tzinfo=UTC), True),
        BackupRecord("mon-late", datetime(2026, 11, 23, 23, tzinfo=UTC), True),
        BackupRecord("tue", datetime(2026, 11, 24, 1, tzinfo=UTC), True),
    ]
    keep, prune = plan_retention(records, Policy(daily=2, weekly=0, monthly=0), NOW)
    assert keep == {"mon-late", "tue"}
    assert prune == {"mon-early"}


def test_newest_good_backup_is_kept_even_with_zero_counts() -> None:
    keep, prune = plan_retention(nightly(5), Policy(daily=0, weekly=0, monthly=0), NOW)
    assert keep == {"d0"}
    assert len(prune) == 4


def test_failed_backups_never_take_a_slot_nor_push_good_ones_out() -> None:
    good = nightly(10, start=NOW - timedelta(days=5))
    failed = nightly(5, good=False)  # the last five nights all failed
    failed = [BackupRecord(f"bad{i}", r.created_at, False) for i, r in enumerate(failed)]
    keep_without, _ = plan_retention(good, Policy(daily=3, weekly=0, monthly=0), NOW)
    keep_with, prune_with = plan_retention(good + failed, Policy(daily=3, weekly=0, monthly=0), NOW)
    assert keep_without <= keep_with
    assert {r.id for r in good if r.id in keep_with} == keep_without
    assert not prune_with & {r.id for r in failed}  # recent failures kept as records


def test_only_failures_prunes_nothing_good_and_old_failures_go() -> None:
    failed = nightly(20, good=False)
    keep, prune = plan_retention(failed, Policy(bad_max_age=timedelta(days=7)), NOW)
    assert {f"d{i}" for i in range(8)} == keep
    assert {f"d{i}" for i in range(8, 20)} == prune


def test_empty_series_and_bad_policy() -> None:
    assert plan_retention([], Policy(), NOW) == (set(), set())
    with pytest.raises(ValueError):
        Policy(daily=-1)


def test_gaps_do_not_shorten_history() -> None:
    # One backup a week for ten weeks: "7 daily" keeps 7 backups reaching back 7 weeks, not 7 days.
    records = [BackupRecord(f"w{i}", NOW - timedelta(weeks=i), True) for i in range(10)]
    keep, _ = plan_retention(records, Policy(daily=7, weekly=0, monthly=0), NOW)
    assert keep == {f"w{i}" for i in range(7)}
