"""Reading order of a PDF page's text boxes: top down first, then by recursive XY-cut, the order unstructured's
``fast`` strategy gives them, without numba.

unstructured's own XY-cut module compiles its projection loop with numba: importing and compiling it cost each
parser process ~100 MB and ~0.85 s at its first PDF (docs/benchmarks.md, "Parser memory"). Here a shadow is an
interval, merged with the others, not a count per position up to the farthest box.

XY-cut: the boxes' shadows on the x axis leave gaps that cut the page into columns, read left to right; each
column's shadows on the y axis cut it into rows, read top down; a row that holds several boxes is cut again the
same way, columns first. Boxes are shrunk first (SHRINK) so that two boxes that merely touch leave a gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Points = tuple[tuple[float, float], ...]  # corners ((x0, top), (x0, bottom), (x1, bottom), (x1, top))

# Each box keeps its top-left corner and this fraction of its width and height (unstructured's default).
SHRINK = 0.9


def reading_order(corners: Sequence[Points]) -> list[int]:
    """The boxes' indices in reading order: sorted by (top, left), then XY-cut. A page with a box reaching past
    its top or left edge (a negative coordinate) keeps the (top, left) order, as unstructured does."""
    by_position = sorted(range(len(corners)), key=lambda i: (corners[i][0][1], corners[i][0][0]))
    if not corners or any(x < 0 or y < 0 for points in corners for x, y in points):
        return by_position
    boxes = np.asarray([_shrunk(corners[i]) for i in by_position], dtype=np.int64).reshape(-1, 4)
    return _cut(boxes, np.asarray(by_position, dtype=np.int64))


def _shrunk(points: Points) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in whole units, width and height shrunk to SHRINK of themselves."""
    left, top = int(points[0][0]), int(points[0][1])
    right, bottom = int(points[2][0]), int(points[2][1])
    width, height = right - left, bottom - top
    return left, top, int(right - (width - width * SHRINK)), int(bottom - (height - height * SHRINK))


def _segments(starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, int]]:
    """The runs [start, end) of whole positions that some box's shadow [start, end) covers, in order: shadows
    that overlap or touch make one run. A box narrower than one unit still covers its start, so that every box
    falls in a run and none is lost. Merged as intervals, so a box far out (a huge coordinate) costs nothing."""
    runs: list[list[int]] = []
    for start, end in sorted(zip(starts.tolist(), np.maximum(ends, starts + 1).tolist(), strict=True)):
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    return [(start, end) for start, end in runs]


def _cut(boxes: np.ndarray, ids: np.ndarray) -> list[int]:
    """``ids`` (one per row of ``boxes``) in XY-cut order, columns first. Each step replaces the first region left
    by its columns, or a column by its rows, in place, until every region is one row of one column: a loop, not a
    recursion, so a page nested deeper than Python's stack (a hostile PDF) costs time, not the file."""
    out: list[int] = []
    pending: list[tuple[np.ndarray, np.ndarray] | np.ndarray] = [(boxes, ids)]  # a region to cut, or ids to emit
    while pending:
        work = pending.pop()
        if isinstance(work, np.ndarray):
            out.extend(int(i) for i in work)
            continue
        region, region_ids = work
        steps: list[tuple[np.ndarray, np.ndarray] | np.ndarray] = []
        by_left = region[:, 0].argsort()
        region, region_ids = region[by_left], region_ids[by_left]
        for c0, c1 in _segments(region[:, 0], region[:, 2]):
            inside = (c0 <= region[:, 0]) & (region[:, 0] < c1)
            column, column_ids = region[inside], region_ids[inside]
            by_top = column[:, 1].argsort()
            column, column_ids = column[by_top], column_ids[by_top]
            rows = _segments(column[:, 1], column[:, 3])
            if len(rows) == 1:
                steps.append(column_ids)
                continue
            for r0, r1 in rows:
                inside = (r0 <= column[:, 1]) & (column[:, 1] < r1)
                steps.append((column[inside], column_ids[inside]))
        pending += reversed(steps)  # the first step is taken next
    return out
