"""The one indexability gate: type from the format table, the one size limit, and the kind a type skip names."""

from __future__ import annotations

import pytest

from flows.rag.indexable import limit_bytes, parse_name, skip_reason, skipped_kind


def test_type_is_decided_before_size_and_a_readable_file_under_the_limit_passes() -> None:
    limit = limit_bytes(1)
    assert skip_reason("notes.md", "text/markdown", 10, limit) is None
    assert skip_reason("talk.mp3", "audio/mpeg", 5 * 2**20, limit) == "unsupported file type .mp3 (audio)"
    assert skip_reason("big.pdf", "application/pdf", 3 * 2**20, limit) == (
        "file is 3.0 MB, over the 1 MB limit (max_file_mb)"
    )
    assert skip_reason("big.pdf", "application/pdf", limit, limit) is None  # at the limit: indexed
    assert skip_reason("Notes.docx", None, None, limit) is None  # an export: its size is unknown until fetched
    assert skip_reason("big.pdf", "application/pdf", 3 * 2**20, None) is None  # no limit


@pytest.mark.parametrize(
    ("name", "mime", "expected"),
    [("Q3 report", "application/pdf", "Q3 report.pdf"), ("q3.PDF", "application/pdf", None),
     ("main.c", "text/plain", "main.c.txt"), ("notes.md", "text/plain", None), ("clip", "video/mp4", None),
     ("readme", None, None)],
)  # fmt: skip
def test_the_name_to_parse_by_takes_the_extension_the_mime_type_stands_for(
    name: str, mime: str | None, expected: str | None
) -> None:
    assert parse_name(name, mime) == expected


def test_the_kind_of_a_type_skip_is_read_back_for_counting() -> None:
    assert skipped_kind(skip_reason("x.zip", "application/zip", 1, None)) == "archive"
    assert skipped_kind(skip_reason("Interview", "audio/mpeg", 1, None)) == "audio"
    assert skipped_kind(skip_reason("x.xyz", None, 1, None)) == "no parser"
    assert skipped_kind("unsupported file type application/vnd.google-apps.form (no export)") == "no export"
    assert skipped_kind(skip_reason("big.pdf", None, 10, 1)) is None
    assert skipped_kind("encrypted PDF (password protected)") is None
    assert skipped_kind(None) is None
