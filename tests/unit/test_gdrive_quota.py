"""Drive quota accounting: units per call, the meter, the in-process limiter, the shared Prefect rate limit."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from flows.common.retry import RetryPolicy
from flows.rag.sources.gdrive_api import DriveApi
from flows.rag.sources.gdrive_client import DriveRateLimit, DriveService, info_project, quota_project
from flows.rag.sources.gdrive_quota import (
    DOWNLOAD_UNITS,
    LIST_UNITS,
    READ_UNITS,
    UNLISTED_METHOD_UNITS,
    QuotaMeter,
    TokenBucket,
    Usage,
    limit_name,
    units_for,
)


def test_published_units_per_method_and_the_assumption_for_others() -> None:
    assert units_for("files.get") == READ_UNITS == 5
    assert units_for("files.list") == units_for("changes.list") == LIST_UNITS == 100
    assert units_for("files.get_media") == units_for("files.export") == DOWNLOAD_UNITS == 200
    assert units_for("teamdrives.frobnicate") == UNLISTED_METHOD_UNITS


def test_meter_keeps_downloads_apart_and_books_calls_once() -> None:
    meter = QuotaMeter()
    meter.charge("files.list")
    meter.charge("files.get")
    meter.charge("files.get_media")
    meter.add_bytes("files.get_media", 4096)
    assert meter.downloads == Usage(200, 4096)
    assert meter.take_calls() == Usage(105, 0)
    assert meter.take_calls() == Usage()
    meter.charge("changes.list")
    assert meter.take_calls() == Usage(100, 0)
    assert meter.total == Usage(405, 4096)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_allows_a_minute_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)  # 10 units a second
    for _ in range(6):
        bucket.acquire(100)
    assert clock.now == 0.0  # a minute's worth goes at once
    bucket.acquire(100)
    assert clock.now == pytest.approx(10.0)
    clock.now += 60  # idle: refills to one minute's worth, no more
    for _ in range(6):
        bucket.acquire(100)
    assert clock.now == pytest.approx(70.0)
    bucket.acquire(5000)  # dearer than the bucket: waits for a full one, never forever
    assert clock.now == pytest.approx(130.0)


def test_limit_names_and_projects() -> None:
    assert limit_name("acme-prod") == "drive-units:acme-prod"
    assert limit_name("a/b c") == "drive-units:a-b-c"  # characters Prefect refuses in a name
    assert info_project({"project_id": "p1", "quota_project_id": "q1"}) == "q1"
    assert info_project({"project_id": "p1"}) == "p1"
    assert quota_project(AnonymousCredentials()) == "default"


class Recorder:
    """A rate limit that records what each request took."""

    def __init__(self) -> None:
        self.taken: list[int] = []

    def acquire(self, units: int) -> None:
        self.taken.append(units)


class FakeRequest:
    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result

    def execute(self, num_retries: int = 0) -> dict[str, Any]:
        return self.result


def test_every_drive_call_takes_its_units_before_the_request() -> None:
    limiter = Recorder()
    api = DriveApi(DriveService(AnonymousCredentials(), "http://127.0.0.1:1"), RetryPolicy(), limiter)
    api.call(lambda s: FakeRequest({}), "files.get f1")
    api.call(lambda s: FakeRequest({}), "files.list")
    api.call(lambda s: FakeRequest({}), "a listing", method="permissions.list")
    assert limiter.taken == [5, 100, 100]
    assert api.meter.calls == Usage(205, 0) and api.api_calls == 3


def test_without_the_limit_on_the_server_calls_are_paced_in_process() -> None:
    limiter = DriveRateLimit(f"no-such-{uuid.uuid4().hex[:6]}", units_per_minute=1000)
    assert limiter.shared is False
    limiter.acquire(400)  # the token bucket: no server call, no wait within the minute


def test_the_shared_rate_limit_counts_every_process_units_together() -> None:
    """Two clients of one project (two syncs, two nodes) occupy the same Prefect limit."""
    project = f"proj-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=limit_name(project), limit=10_000, slot_decay_per_second=0.01)
        )
    first, second = DriveRateLimit(project), DriveRateLimit(project)
    assert first.shared and second.shared
    first.acquire(3000)
    second.acquire(3000)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(limit_name(project))
    assert limit.active_slots >= 5990
