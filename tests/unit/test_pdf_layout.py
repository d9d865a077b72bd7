"""A PDF page's boxes in reading order (flows/rag/pdf_order.py) and list items joined (flows/rag/pdf_text.py),
against unstructured's own fast-strategy functions where they agree, and where they lose text."""

from __future__ import annotations

import random

import pytest

from flows.rag.pdf_order import Points, reading_order


def box(x0: float, top: float, x1: float, bottom: float) -> Points:
    return ((x0, top), (x0, bottom), (x1, bottom), (x1, top))


def test_two_columns_are_read_one_after_the_other_each_top_down() -> None:
    page = [box(320, 100, 560, 130), box(40, 300, 280, 330), box(40, 100, 280, 130), box(320, 300, 560, 330)]
    assert reading_order(page) == [2, 1, 0, 3]


def test_a_heading_across_both_columns_cuts_the_page_into_rows_first() -> None:
    """Nothing separates the columns on the whole page, so rows are cut first: the heading, then each row's boxes
    from left to right."""
    page = [box(320, 200, 560, 230), box(40, 200, 280, 230), box(40, 100, 560, 130), box(40, 300, 280, 330)]
    assert reading_order(page) == [2, 1, 0, 3]


def _unstructured_order(page: list[Points]) -> list[int]:
    from unstructured.documents.coordinates import PixelSpace
    from unstructured.documents.elements import CoordinatesMetadata, Text
    from unstructured.partition.utils.constants import SORT_MODE_BASIC, SORT_MODE_XY_CUT
    from unstructured.partition.utils.sorting import sort_page_elements

    elements = []
    for n, points in enumerate(page):
        element = Text(str(n))
        element.metadata.coordinates = CoordinatesMetadata(points=points, system=PixelSpace(width=612, height=792))
        elements.append(element)
    ordered = sort_page_elements(sort_page_elements(elements, SORT_MODE_BASIC), SORT_MODE_XY_CUT)
    return [int(e.text) for e in ordered]


@pytest.mark.parametrize("seed", range(40))
def test_the_order_is_unstructured_s_on_random_layouts(seed: int) -> None:
    """Columns, rows, overlaps and ties; every box at least 3 units wide and high, where both keep every box."""
    rng = random.Random(seed)
    page = []
    for _ in range(rng.randint(1, 40)):
        x0, top = rng.choice([rng.uniform(0, 560), rng.choice([40.0, 320.0])]), rng.uniform(0, 760)
        page.append(box(x0, top, x0 + rng.uniform(3, 260), top + rng.uniform(3, 40)))
    assert reading_order(page) == _unstructured_order(page)


def test_a_box_one_unit_wide_is_kept() -> None:
    """Shrunk to nothing, its shadow is empty: unstructured's XY-cut leaves it out of the page (a "|" of a
    texlive manual's table went missing that way)."""
    page = [box(40, 100, 280, 130), box(300.2, 100, 301.4, 130), box(320, 100, 560, 130)]
    assert sorted(_unstructured_order(page)) == [0, 2]
    assert reading_order(page) == [0, 1, 2]


def test_a_box_far_out_costs_no_memory() -> None:
    """A shadow is an interval, not a histogram of every position up to the farthest box (unstructured's: a box at
    x = 10^12 would need 8 TB)."""
    page = [box(1e12, 100, 1e12 + 50, 130), box(40, 100, 280, 130)]
    assert reading_order(page) == [1, 0]


def test_a_page_nested_deeper_than_python_s_stack_is_ordered() -> None:
    """Each level: a heading across the level, below it a box on the left that runs to the page's foot, and the
    next level to its right. unstructured's recursive XY-cut raises RecursionError at this depth, which would fail
    the file."""
    levels = 1200  # Python's default limit is 1,000 frames
    foot = 20.0 * levels + 40
    page: list[Points] = []
    for level in range(levels):
        x0, top = 20.0 * level, 20.0 * level
        page.append(box(x0, top, 20.0 * levels + 20, top + 10))  # the level's heading
        page.append(box(x0, top + 20, x0 + 10, foot))  # the box on the left, beside the next level
    with pytest.raises(RecursionError):
        _unstructured_order(page)
    assert reading_order(page) == list(range(2 * levels))


def test_a_box_past_the_page_s_edge_leaves_the_page_in_top_down_order() -> None:
    page = [box(320, 100, 560, 130), box(40, -5, 280, 20), box(40, 300, 280, 330)]
    assert reading_order(page) == _unstructured_order(page) == [1, 0, 2]


def _elements(rows: list[tuple[str, str, Points]]) -> list[object]:
    from unstructured.documents.coordinates import PixelSpace
    from unstructured.documents.elements import CoordinatesMetadata, ListItem, NarrativeText

    out = []
    for kind, text, points in rows:
        element = (ListItem if kind == "item" else NarrativeText)(text)
        element.metadata.coordinates = CoordinatesMetadata(points=points, system=PixelSpace(width=612, height=792))
        out.append(element)
    return out


def test_a_list_item_s_continuation_boxes_are_joined_into_it() -> None:
    """All of them: unstructured's own join keeps only the last ("1. Glaciers carve creep downhill.")."""
    from unstructured.documents.coordinates import PixelSpace

    from flows.rag.pdf_text import join_list_items

    page = _elements(
        [
            ("item", "1. Glaciers carve", box(40, 100, 300, 112)),
            ("text", "valleys as they", box(52, 110, 300, 122)),
            ("text", "creep downhill.", box(52, 114, 200, 126)),
            ("text", "Far away on the right.", box(420, 300, 560, 312)),
        ]
    )
    joined = join_list_items(page, PixelSpace(width=612, height=792))
    assert [e.text for e in joined] == ["1. Glaciers carve valleys as they creep downhill.", "Far away on the right."]
    assert joined[0].metadata.coordinates.points == box(40, 100, 300, 126)


def test_a_box_that_does_not_continue_the_item_ends_it() -> None:
    """unstructured keeps the item open past such a box, then drops that box and repeats the item: ["2. Reefs
    shelter a quarter of species."] twice."""
    from unstructured.documents.coordinates import PixelSpace

    from flows.rag.pdf_text import join_list_items

    page = _elements(
        [
            ("item", "2. Reefs shelter", box(40, 100, 300, 112)),
            ("text", "A note in the margin.", box(10, 105, 30, 140)),
            ("text", "a quarter of species.", box(52, 110, 300, 122)),
        ]
    )
    joined = join_list_items(page, PixelSpace(width=612, height=792))
    assert [e.text for e in joined] == ["2. Reefs shelter", "A note in the margin.", "a quarter of species."]
