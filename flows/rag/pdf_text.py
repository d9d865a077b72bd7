"""A PDF's text layer as unstructured elements, read by pdfium (pypdfium2) instead of pdfminer.

unstructured's ``fast`` strategy spends most of a text PDF's parse interpreting content streams in pdfminer's pure
Python (bench/bench_parse_formats.py profiles it). pdfium reads the same characters in native code; their boxes are
then grouped into lines and text boxes by pdfminer's own rules (its ``group_objects`` and ``group_textlines``, with
the LAParams unstructured passes), so that each box is the text unstructured would have made an element of. The
elements are then built and typed by unstructured's own functions, their list items joined and their boxes put in
reading order (flows/rag/pdf_order.py) as its ``fast`` partition does.

Only what pdfminer would lay out horizontally is read (its ``detect_vertical`` is off, as in unstructured).
"""

from __future__ import annotations

import bisect
import ctypes
import os
import re
from dataclasses import dataclass, field
from typing import Any

from flows.rag import text_types
from flows.rag.pdf_order import Points, reading_order

# pdfminer's LAParams as unstructured's partition_pdf sets them (its word margin is unstructured's, 0.185).
LINE_OVERLAP = 0.5
CHAR_MARGIN = 2.0
LINE_MARGIN = 0.5
WORD_MARGIN = 0.185
# unstructured drops a fake-bold glyph printed twice within this many points (PDF_CHAR_DUPLICATE_THRESHOLD).
DUPLICATE_DISTANCE = float(os.environ.get("PDF_CHAR_DUPLICATE_THRESHOLD", "2.0"))
DUPLICATE_OVERLAP = float(os.environ.get("PDF_CHAR_OVERLAP_RATIO_THRESHOLD", "0.5"))  # of the mean glyph width
_SPACES = re.compile(r"[ ]{2,}")


@dataclass(slots=True)
class Glyph:
    """One character boxed as pdfminer does: from its origin (pdfium gives the right edge of the glyph's box where
    pdfminer takes the advance), its font size high from the font's descent."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(slots=True, eq=False)
class Line:
    parts: list[str] = field(default_factory=list)
    last: Glyph | None = None
    x0: float = float("inf")
    y0: float = float("inf")
    x1: float = float("-inf")
    y1: float = float("-inf")
    _last_x1: float = float("inf")

    def add(self, glyph: Glyph) -> None:
        # LTTextLineHorizontal.add: a gap wider than the word margin is a space
        if self._last_x1 < glyph.x0 - WORD_MARGIN * max(glyph.x1 - glyph.x0, glyph.y1 - glyph.y0):
            self.parts.append(" ")
        self._last_x1 = glyph.x1
        self.x0, self.y0 = min(self.x0, glyph.x0), min(self.y0, glyph.y0)
        self.x1, self.y1 = max(self.x1, glyph.x1), max(self.y1, glyph.y1)
        if self.last is None or not _duplicate(self.last, glyph):  # the last glyph kept, as unstructured compares
            self.parts.append(glyph.text)
            self.last = glyph

    @property
    def height(self) -> float:
        return self.y1 - self.y0


def _duplicate(first: Glyph, second: Glyph) -> bool:
    """unstructured's fake-bold test: the same character again, at nearly the same place, mostly overlapping."""
    if first.text != second.text or DUPLICATE_DISTANCE <= 0:
        return False
    if abs(first.x0 - second.x0) >= DUPLICATE_DISTANCE or abs(first.y0 - second.y0) >= DUPLICATE_DISTANCE:
        return False
    overlap = max(0.0, min(first.x1, second.x1) - max(first.x0, second.x0))
    mean_width = (first.x1 - first.x0 + second.x1 - second.x0) / 2
    return mean_width > 0 and overlap / mean_width > DUPLICATE_OVERLAP


def _aligned(a: Glyph, b: Glyph) -> bool:
    """pdfminer's ``halign``: vertically overlapping by half the smaller height, horizontally near."""
    overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
    if overlap < 0 or overlap <= min(a.y1 - a.y0, b.y1 - b.y0) * LINE_OVERLAP:
        return False
    distance = max(0.0, max(a.x0, b.x0) - min(a.x1, b.x1))
    return distance < max(a.x1 - a.x0, b.x1 - b.x0) * CHAR_MARGIN


def group_lines(glyphs: list[Glyph]) -> list[Line]:
    """pdfminer's ``group_objects`` for horizontal text: consecutive glyphs that align make one line."""
    lines: list[Line] = []
    line: Line | None = None
    previous: Glyph | None = None
    for glyph in glyphs:
        if previous is not None:
            aligned = _aligned(previous, glyph)
            if aligned and line is not None:
                line.add(glyph)
            elif line is not None:
                lines.append(line)
                line = None
            else:
                line = Line()
                line.add(previous)
                if aligned:
                    line.add(glyph)
                else:
                    lines.append(line)
                    line = None
        previous = glyph
    if line is None and previous is not None:
        line = Line()
        line.add(previous)
    if line is not None:
        lines.append(line)
    return [line for line in lines if line.x1 > line.x0 and line.y1 > line.y0]


def _neighbours(line: Line, other: Line) -> bool:
    """pdfminer's ``find_neighbors``: within half a line's height above or below, as high, and aligned."""
    d = LINE_MARGIN * line.height
    if other.x1 <= line.x0 or line.x1 <= other.x0 or other.y1 <= line.y0 - d or line.y1 + d <= other.y0:
        return False
    if abs(other.height - line.height) > d:
        return False
    return (
        abs(other.x0 - line.x0) <= d
        or abs(other.x1 - line.x1) <= d
        or abs((other.x0 + other.x1) / 2 - (line.x0 + line.x1) / 2) <= d
    )


def group_boxes(lines: list[Line]) -> list[list[Line]]:
    """pdfminer's ``group_textlines``: lines joined to their neighbours, transitively; boxes in order of their first
    line, each box's lines from the top down."""
    parent = list(range(len(lines)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Only lines whose bottoms lie within reach are compared (pdfminer's Plane index does the same job): a page of
    # thousands of lines must not cost millions of comparisons.
    by_bottom = sorted(range(len(lines)), key=lambda i: lines[i].y0)
    bottoms = [lines[i].y0 for i in by_bottom]
    tallest = max((line.height for line in lines), default=0.0)
    for i, line in enumerate(lines):
        d = LINE_MARGIN * line.height
        low = bisect.bisect_left(bottoms, line.y0 - d - tallest)
        for j in by_bottom[low : bisect.bisect_right(bottoms, line.y1 + d)]:
            if i != j and _neighbours(line, lines[j]):
                parent[root(j)] = root(i)
    boxes: dict[int, list[Line]] = {}
    for i, line in enumerate(lines):
        boxes.setdefault(root(i), []).append(line)
    return [sorted(box, key=lambda line: -line.y1) for box in boxes.values()]


def _stream_order(page: Any) -> dict[int, int]:
    """Each top-level page object's place in the content stream, by its handle's address."""
    import pypdfium2.raw as pdfium_c

    objects = (pdfium_c.FPDFPage_GetObject(page.raw, i) for i in range(pdfium_c.FPDFPage_CountObjects(page.raw)))
    return {ctypes.cast(handle, ctypes.c_void_p).value or 0: i for i, handle in enumerate(objects)}


def page_glyphs(page: Any, textpage: Any) -> list[Glyph]:
    """The page's characters in content-stream order (as pdfminer reads them; pdfium's text page moves some),
    without the spaces and line breaks pdfium makes up."""
    import pypdfium2.raw as pdfium_c

    raw = textpage.raw
    order = _stream_order(page)
    places: list[int] = []
    count = pdfium_c.FPDFText_CountChars(raw)
    text = textpage.get_text_range(0, count)
    if len(text) != count:  # characters beyond the BMP take two UTF-16 units: ask for each one
        text = "".join(chr(pdfium_c.FPDFText_GetUnicode(raw, index)) for index in range(count))
    rect = pdfium_c.FS_RECTF()
    x, y = ctypes.c_double(), ctypes.c_double()
    glyphs: list[Glyph] = []
    spaced = False  # a space or line break came before: the PDF's own or one pdfium made up
    descents: dict[tuple[int, float], float] = {}
    descent = ctypes.c_float()
    for index, char in enumerate(text):
        if char in " \r\n":
            spaced = True
            continue
        if char in "\0\uffff":
            continue
        size = pdfium_c.FPDFText_GetFontSize(raw, index)
        if size <= 0 or not pdfium_c.FPDFText_GetLooseCharBox(raw, index, rect):
            continue
        pdfium_c.FPDFText_GetCharOrigin(raw, index, x, y)
        text_object = pdfium_c.FPDFText_GetTextObject(raw, index)
        handle = ctypes.cast(text_object, ctypes.c_void_p).value or 0
        if (handle, size) not in descents:  # the font's descent, as pdfminer places a glyph's bottom
            font = pdfium_c.FPDFTextObj_GetFont(text_object)
            found = bool(font) and pdfium_c.FPDFFont_GetDescent(font, size, descent)
            descents[handle, size] = descent.value if found else rect.bottom - y.value
        bottom = y.value + descents[handle, size]
        char = "-" if char in "\x02\ufffe" else char  # how pdfium marks a hyphen that ends a line
        last = glyphs[-1] if glyphs else None
        if last and not spaced and (last.x0, last.y0, last.x1) == (x.value, bottom, rect.right):
            last.text += char  # one glyph of many characters (a ligature), which pdfium lists one by one
            continue
        # pdfminer's box: the advance from the origin, the font size from the descent
        glyphs.append(Glyph(char, x.value, bottom, max(rect.right, x.value), bottom + size))
        places.append(order.get(handle, len(order)))
        spaced = False
    return [glyph for _, glyph in sorted(zip(places, glyphs, strict=True), key=lambda pair: pair[0])]


def _box_text(box: list[Line]) -> str:
    """The box's text as unstructured cleans it: lines joined by a space, runs of spaces collapsed."""
    text = " ".join("".join(line.parts) for line in box).replace("\xa0", " ")
    return _SPACES.sub(" ", text).strip()


# A box continues the list item before it when it starts within the item's box widened by these fractions of its
# width and height (unstructured's fast strategy uses the same margins).
LIST_ITEM_SLACK_X = 0.2
LIST_ITEM_SLACK_Y = 0.3


def _continues(points: Points, item: Points) -> bool:
    """Whether a box with corners ``points`` continues the list item whose own box is ``item``: it starts at or
    right of the item's left edge, ends within its widened right edge, and its top lies within the item's widened
    top and bottom."""
    (left, top), (_, bottom), (right, _), _ = item
    slack_x, slack_y = LIST_ITEM_SLACK_X * (right - left), LIST_ITEM_SLACK_Y * (bottom - top)
    x0, y0, x1 = points[0][0], points[0][1], points[2][0]
    return left <= x0 and x1 < right + slack_x and top - slack_y < y0 < bottom + slack_y


def join_list_items(elements: list[Any], system: Any) -> list[Any]:
    """A page's elements with each list item's continuation boxes (the boxes right after it that ``_continues``)
    joined into it: text after a space, box grown to cover both. Any other box ends the item."""
    from unstructured.documents.elements import CoordinatesMetadata, ListItem

    joined: list[Any] = []
    item: tuple[Any, Points] | None = None  # the open list item and its own box, before anything joined it
    for element in elements:
        points = element.metadata.coordinates.points
        if isinstance(element, ListItem):
            item = element, points
        elif item is not None and _continues(points, item[1]):
            grown = item[0].metadata.coordinates.points
            x0, top = min(grown[0][0], points[0][0]), min(grown[0][1], points[0][1])
            x1, bottom = max(grown[2][0], points[2][0]), max(grown[1][1], points[1][1])
            item[0].text = f"{item[0].text} {element.text}"
            item[0].metadata.coordinates = CoordinatesMetadata(
                points=((x0, top), (x0, bottom), (x1, bottom), (x1, top)), system=system
            )
            continue
        else:
            item = None
        joined.append(element)
    return joined


def pdf_elements(path: str, filename: str) -> list[Any]:
    """unstructured's elements of the PDF's text layer, each with its page number and coordinates."""
    import pypdfium2 as pdfium
    from unstructured.documents.coordinates import PixelSpace
    from unstructured.documents.elements import CoordinatesMetadata, ElementMetadata
    from unstructured.partition.text import element_from_text

    pages: list[tuple[Any, list[tuple[str, Points]]]] = []
    document = pdfium.PdfDocument(path)
    try:
        for page in document:
            width, height = page.get_size()
            textpage = page.get_textpage()
            boxes = []
            for box in group_boxes(group_lines(page_glyphs(page, textpage))):
                text = _box_text(box)
                if text:
                    x0, x1 = min(line.x0 for line in box), max(line.x1 for line in box)
                    top, bottom = height - max(line.y1 for line in box), height - min(line.y0 for line in box)
                    boxes.append((text, ((x0, top), (x0, bottom), (x1, bottom), (x1, top))))
            textpage.close()
            page.close()
            pages.append((PixelSpace(width=width, height=height), boxes))
    finally:
        document.close()
    # spaCy types only the boxes short enough to be a title (flows/rag/text_types.py): those in one batch
    text_types.prepare_docs(text for _, boxes in pages for text, _ in boxes if not text_types.too_long_for_title(text))
    elements: list[Any] = []
    for number, (system, boxes) in enumerate(pages, 1):
        page_elements = []
        for text, points in boxes:
            element = element_from_text(text, coordinates=points, coordinate_system=system)
            element.metadata = ElementMetadata(
                filename=filename,
                page_number=number,
                coordinates=CoordinatesMetadata(points=points, system=system),
                languages=["eng"],
            )
            element.metadata.detection_origin = "pdfium"
            page_elements.append(element)
        joined = join_list_items(page_elements, system)
        elements += [joined[i] for i in reading_order([e.metadata.coordinates.points for e in joined])]
    return elements
