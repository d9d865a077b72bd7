"""The sync report counts skipped files by the kind their type skip names."""

from __future__ import annotations

from flows.rag.report import render_sync_report


def test_skipped_files_are_counted_by_type_and_other_reasons_are_not() -> None:
    problems = [
        ["a.mp3", "skipped", "unsupported file type .mp3 (audio)"],
        ["Interview", "skipped", "unsupported file type audio/mpeg (no extension) (audio)"],
        ["photos.zip", "skipped", "unsupported file type .zip (archive)"],
        ["huge.pdf", "skipped", "file is 3.0 MB, over the 1 MB limit (max_file_mb)"],
        ["locked.pdf", "skipped", "encrypted PDF (password protected)"],
        ["broken.pdf", "failed", "cannot parse: corrupt PDF"],
    ]
    report = render_sync_report({"source": "local:/docs", "skipped": 5, "failed": 1, "problems": problems})
    assert "## Skipped by type\n\n| kind | files |\n|---|---:|\n| archive | 1 |\n| audio | 2 |\n" in report
    assert "| `huge.pdf` | skipped | file is 3.0 MB" in report  # still listed one by one


def test_no_type_table_without_type_skips() -> None:
    report = render_sync_report({"source": "local:/docs", "problems": [["x.pdf", "failed", "cannot parse: x"]]})
    assert "Skipped by type" not in report
