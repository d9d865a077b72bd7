"""Split a write into requests below a byte budget: a Qdrant server refuses a request body over 32 MB.

Sizes are estimated from the vector's length and the payload's strings, without serialising anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# A float32 from ``tolist()`` prints as up to ~22 characters ("-0.0123456789012345678") plus its comma.
FLOAT_JSON_BYTES = 24
# The point's id (a quoted UUID), its keys and brackets.
POINT_OVERHEAD_BYTES = 96
# Default request budget: a quarter of the server's 32 MB, which leaves room for an estimate that is off.
DEFAULT_BUDGET_BYTES = 8 * 1024 * 1024


def value_bytes(value: Any) -> int:
    """Upper-bound-ish JSON size of a payload value (strings by their UTF-8 length, escapes aside)."""
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 2
    if isinstance(value, Mapping):
        return 2 + sum(value_bytes(k) + 1 + value_bytes(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(value_bytes(v) + 1 for v in value)
    return 24  # a number, bool or null


def point_bytes(dim: int, payload: Mapping[str, Any]) -> int:
    return POINT_OVERHEAD_BYTES + dim * FLOAT_JSON_BYTES + value_bytes(payload)


def byte_batches(sizes: Sequence[int], budget: int) -> Iterator[range]:
    """Consecutive index ranges whose summed sizes stay within ``budget``; a point bigger than the budget
    goes alone (a point cannot be split)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > budget:
            yield range(start, i)
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield range(start, len(sizes))
