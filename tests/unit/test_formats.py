"""The one table of what can be parsed, asked with a name and a MIME type before any byte is downloaded."""

from __future__ import annotations

import pytest

from flows.rag.formats import FORMATS, format_for, unsupported_reason


@pytest.mark.parametrize(
    ("name", "mime_type"),
    [("scan.PDF", None), ("Whiteboard.heic", None), ("budget.xls", None), ("thesis.odt", None),
     ("letter.rtf", None), ("book.epub", None), ("mail.msg", None), ("Quarterly report", "application/pdf"),
     ("Board photo", "image/jpeg"), ("notes", "text/plain; charset=utf-8")],
)  # fmt: skip
def test_what_a_parser_exists_for_has_no_reason(name: str, mime_type: str | None) -> None:
    assert unsupported_reason(name, mime_type) is None


@pytest.mark.parametrize(
    ("name", "mime_type", "reason"),
    [("talk.mp3", None, "unsupported file type .mp3 (audio)"),
     ("demo.MOV", "video/quicktime", "unsupported file type .mov (video)"),
     ("backup.tar.gz", None, "unsupported file type .gz (archive)"),
     ("photos.zip", "application/zip", "unsupported file type .zip (archive)"),
     ("Interview", "audio/mpeg", "unsupported file type audio/mpeg (no extension) (audio)"),
     ("setup.exe", None, "unsupported file type .exe (executable)"),
     ("model.blend", None, "unsupported file type .blend (no parser)"),
     ("README", None, "unsupported file type (no extension) (no parser)")],
)  # fmt: skip
def test_what_cannot_be_indexed_says_so_with_its_kind(name: str, mime_type: str | None, reason: str) -> None:
    assert unsupported_reason(name, mime_type) == reason


def test_the_extension_wins_over_a_generic_mime_type() -> None:
    assert format_for("old.doc", "application/octet-stream") == (".doc", FORMATS[".doc"])
    assert format_for("Scan", "application/pdf") == (".pdf", FORMATS[".pdf"])


def test_every_mime_type_names_one_format() -> None:
    listed = [mime for fmt in FORMATS.values() for mime in fmt.mime_types]
    assert len(listed) == len(set(listed))
