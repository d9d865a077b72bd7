"""rag-sync of a Drive under a daily egress budget, with a clock the test moves: a paced run indexes what fits, keeps
the cursor where it was, a second run the same day downloads nothing, the next day's run finishes the backfill; a
download is charged what it really cost, and a copy by checksum nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.common.db import Database
from flows.rag import pacing
from flows.rag.ledger import RagLedger
from flows.rag.sources.gdrive import GoogleDriveSpec
from flows.rag.sources.gdrive_budget import QuotaDays
from flows.rag.sources.gdrive_quota import ASSUMED_EXPORT_BYTES
from flows.rag.sources.gdrive_refs import EXPORTS
from flows.rag.sync import rag_sync
from testkit.documents import TOPICS, write_document
from testkit.gdrive_server import GDOC, serve
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


def test_a_download_is_charged_what_it_really_cost_and_the_next_admission_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Google Doc's export is booked at ASSUMED_EXPORT_BYTES when admitted; once downloaded, the day carries its
    real size, so what the assumption held back goes the same day."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setattr(pacing, "clock", lambda: datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    write_document(tmp_path / "solar.docx", TOPICS["solar.docx"][0])
    export = (tmp_path / "solar.docx").read_bytes()
    assert len(export) < ASSUMED_EXPORT_BYTES // 10
    with serve() as (url, drive, _):
        root = drive.folder("Team", None)
        note = drive.add("note.txt", root, "text/plain", TEXT.encode())
        doc = drive.add("Solar", root, GDOC, export)  # the newer: admitted first
        spec = GoogleDriveSpec(folder_ids=[root], api_endpoint=url)
        config = config_for(tmp_path, ledger_url, drive_daily_bytes=ASSUMED_EXPORT_BYTES + 1000)
        days = QuotaDays(Database(ledger_url))

        first = rag_sync(spec, config)
        assert (first["indexed"], first["backfill"]["remaining_files"]) == (1, 1)  # the note did not fit beside it
        assert drive.downloads == [(doc, EXPORTS[GDOC][0])]
        assert days.used("default", "2026-03-01").bytes == len(export)  # not the assumed 2 MiB

        second = rag_sync(spec, config)  # the same day: room for the note now
        assert (second["indexed"], second["backfill"]["paced"]) == (1, False)
        assert [file_id for file_id, _ in drive.downloads] == [doc, note]
        assert days.used("default", "2026-03-01").bytes == len(export) + len(TEXT)


def test_copies_by_checksum_cost_no_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget of one download admits a file and its identical copy (one download), and a copy added later the
    same day, when the budget is spent, is indexed from the vectors already there."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setattr(pacing, "clock", lambda: datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    with serve() as (url, drive, _):
        root = drive.folder("Team", None)
        for folder in (root, drive.folder("Archive", root)):
            drive.add("note.txt", folder, "text/plain", TEXT.encode())
        spec = GoogleDriveSpec(folder_ids=[root], api_endpoint=url)
        config = config_for(tmp_path, ledger_url, drive_daily_bytes=len(TEXT) + 100)
        days = QuotaDays(Database(ledger_url))

        first = rag_sync(spec, config)
        assert (first["new"], first["indexed"], first["backfill"]["paced"]) == (2, 2, False)
        assert len(drive.downloads) == 1
        assert days.used("default", "2026-03-01").bytes == len(TEXT)

        drive.add("note.txt", drive.folder("Old", root), "text/plain", TEXT.encode())
        later = rag_sync(spec, config)  # the day's bytes are spent: only a copy can still go
        assert (later["new"], later["indexed"], later["backfill"]["paced"]) == (1, 1, False)
        assert len(drive.downloads) == 1
        assert days.used("default", "2026-03-01").bytes == len(TEXT)
