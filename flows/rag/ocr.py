"""Text from pixels: PDF pages without a text layer and image files, read by Debian's tesseract.

Pages are rendered with poppler's ``pdftoppm`` and read by one ``tesseract`` run per batch of pages (a list
file as its input), so the language model loads once per batch instead of once per page. Both run through
convert.run_tool, under the parse deadline and the parser process's memory limit. No layout model and no
weights from a hub: tesseract's own language data, from Debian's tesseract-ocr-<lang> packages.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from flows.rag.convert import run_tool, stderr_line
from flows.rag.ledger import FAILED, SKIPPED
from flows.rag.problems import ParseProblem, one_line

OCR_DPI = 300  # tesseract's accuracy drops below ~300 dpi on body text
# An image over this is refused before a pixel is decoded: a 20,000 x 20,000 px scan or an image bomb (a few
# KB declaring gigapixels) would need GBs; 50 MP still takes a 48 MP phone photo.
MAX_OCR_PIXELS = 50_000_000
PAGES_PER_RUN = 8  # pages rendered and read per tesseract run: model loads amortized, disk bounded (~9 MB a page)
# One core per parser process: the pool runs one process per core, tesseract's own threads would contend.
_ONE_THREAD = {"OMP_THREAD_LIMIT": "1"}
_installed: frozenset[str] | None = None


def language_package(language: str) -> str:
    return "tesseract-ocr-" + language.replace("_", "-").lower()


def check_languages(languages: str) -> None:
    """Fail the file with the Debian package to install when a configured language has no data here."""
    global _installed
    if _installed is None:
        listed = run_tool(["tesseract", "--list-langs"]).stdout.decode(errors="replace").splitlines()
        _installed = frozenset(line.strip() for line in listed[1:])  # the first line is a heading
    missing = [lang for lang in languages.split("+") if lang not in _installed]
    if missing:
        packages = ", ".join(language_package(lang) for lang in missing)
        raise ParseProblem(FAILED, f"OCR language {'+'.join(missing)} is not installed (Debian package {packages})")


def read_images(images: list[Path], languages: str, work: Path, pages: int) -> list[str]:
    """One tesseract run over ``images`` (``pages`` pages in all: a TIFF may hold many): each page's text."""
    listing = work / "images.txt"
    listing.write_text("".join(f"{image}\n" for image in images))
    result = run_tool(["tesseract", str(listing), "stdout", "-l", languages], env=_ONE_THREAD)
    if result.returncode != 0:
        detail = stderr_line(result)
        raise ParseProblem(FAILED, f"tesseract cannot read the image: {detail or 'no output'}")
    texts = result.stdout.decode(errors="replace").split("\f")  # tesseract ends every page with a form feed
    return (texts + [""] * pages)[:pages]


def render_dpi(width_pt: float, height_pt: float) -> int:
    """OCR_DPI, lowered for a page so large that rendering it would exceed MAX_OCR_PIXELS."""
    pixels_at_one_dpi = (width_pt / 72) * (height_pt / 72)
    return max(1, min(OCR_DPI, math.floor(math.sqrt(MAX_OCR_PIXELS / max(pixels_at_one_dpi, 1e-9)))))


def _runs(pages: list[int]) -> Iterator[list[int]]:
    """Consecutive pages, at most PAGES_PER_RUN at a time: pdftoppm renders a range in one start."""
    run: list[int] = []
    for page in pages:
        if run and (page != run[-1] + 1 or len(run) == PAGES_PER_RUN):
            yield run
            run = []
        run.append(page)
    if run:
        yield run


def read_pdf_pages(
    path: str, pages: dict[int, tuple[float, float]], languages: str, work: Path
) -> Iterator[tuple[int, str]]:
    """(page number, text) for each of ``pages`` (number -> size in points), rendered and read run by run."""
    check_languages(languages)
    for run in _runs(sorted(pages)):
        dpi = min(render_dpi(*pages[page]) for page in run)
        prefix = work / "page"
        result = run_tool(["pdftoppm", "-f", str(run[0]), "-l", str(run[-1]), "-r", str(dpi), "-gray",
                           path, str(prefix)])  # fmt: skip
        # Uncompressed PGM: writing PNG took pdftoppm 6x longer than rendering. pdftoppm pads the page number
        # to the width of the document's page count.
        images = sorted(work.glob("page-*.pgm"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        if result.returncode != 0 or len(images) != len(run):
            detail = stderr_line(result)
            raise ParseProblem(FAILED, f"pdftoppm cannot render pages {run[0]}-{run[-1]}: {detail or 'no output'}")
        texts = read_images(images, languages, work, len(run))
        for image in images:
            image.unlink()
        yield from zip(run, texts, strict=True)


# What tesseract (leptonica) decodes itself, multi-page TIFFs included; the rest is converted to TIFF first.
_NATIVE = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})


def read_image_file(path: str, extension: str, languages: str, work: Path, max_pages: int | None) -> list[str]:
    """The text of each page of an image file (a TIFF may hold many)."""
    from pi_heif import register_heif_opener
    from PIL import Image, ImageSequence, UnidentifiedImageError

    register_heif_opener()
    check_languages(languages)
    # Pillow's own bomb check (a warning, then an error past 179 MP) gives way to the stricter one below,
    # whose reason says the size; a parser process runs one file at a time.
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:  # reads headers only: every page's size is checked before decoding
            pages = getattr(image, "n_frames", 1)
            if max_pages and pages > max_pages:
                raise ParseProblem(SKIPPED, f"image has {pages} pages, over the limit of {max_pages} per file"
                                   " (max_chunks_per_file, SWARM_MAX_CHUNKS_PER_FILE)")  # fmt: skip
            for frame in ImageSequence.Iterator(image):
                width, height = frame.size
                if width * height > MAX_OCR_PIXELS:
                    raise ParseProblem(
                        SKIPPED,
                        f"image of {width} x {height} px, over the OCR limit of {MAX_OCR_PIXELS // 10**6} megapixels",
                    )
            source = Path(path)
            if extension not in _NATIVE:
                source = work / "image.tif"
                gray = [frame.convert("L") for frame in ImageSequence.Iterator(image)]
                gray[0].save(source, save_all=True, append_images=gray[1:])
    except ParseProblem:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ParseProblem(FAILED, f"cannot read the image: {one_line(exc)}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    return read_images([source], languages, work, pages)
