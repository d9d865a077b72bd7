"""rag-sync of a Drive under a daily egress budget, with a clock the test moves: a paced run indexes what fits, keeps
the cursor where it was, a second run the same day downloads nothing, the next day's run finishes the backfill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.common.db import Database
from flows.rag import pacing
from flows.rag.ledger import RagLedger
from flows.rag.sources.gdrive import GoogleDriveSpec
from flows.rag.sync import rag_sync
from testkit.gdrive_server import serve
from tests.flows.rag_checks import config_for

TEXT = "Llamas are domesticated South American camelids, used as pack animals. " * 20  # 1,460 bytes


def test_a_paced_backfill_goes_on_the_next_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    today = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    monkeypatch.setattr(pacing, "clock", lambda: today)
    with serve() as (url, drive, _):
        root = drive.folder("Team", None)
        ids = [drive.add(f"note {n}.txt", root, "text/plain", f"{n} {TEXT}".encode()) for n in range(3)]
        spec = GoogleDriveSpec(folder_ids=[root], api_endpoint=url)
        config = config_for(tmp_path, ledger_url, drive_daily_bytes=2 * len(TEXT) + 100)  # two files a day
        ledger = RagLedger(Database(ledger_url))

        first = rag_sync(spec, config)
        assert (first["new"], first["indexed"]) == (2, 2)
        assert first["backfill"]["paced"] and first["backfill"]["remaining_files"] == 1
        assert first["backfill"]["eta"] == "2026-03-02T00:00:00+00:00"
        # Most recently modified first: the two newest files went, the oldest waits.
        assert {file_id for file_id, _ in drive.downloads} == set(ids[1:])
        source_id = first["source"]
        assert ledger.get_cursor(source_id) is None  # the plan is not done: the next run plans it again

        again = rag_sync(spec, config)  # later the same day: the budget is spent
        assert (again["new"], again["indexed"], again["unchanged"]) == (0, 0, 2)
        assert len(drive.downloads) == 2

        today += timedelta(days=1)
        nxt = rag_sync(spec, config)
        assert (nxt["new"], nxt["indexed"]) == (1, 1) and not nxt["backfill"]["paced"]
        assert sorted(file_id for file_id, _ in drive.downloads) == sorted(ids)  # each file downloaded once
        assert ledger.get_cursor(source_id) is not None
        assert (nxt["backfill"]["done_files"], nxt["backfill"]["admitted_files"]) == (2, 1)
