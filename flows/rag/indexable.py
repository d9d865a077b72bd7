"""The one answer to "can this document be indexed?", from what a listing knows, before any byte is read.

Every source asks it while listing (the local walk, the Drive listing) and puts the answer on the DocumentRef,
so the pipeline records a skipped document without fetching it, and the same file gets the same status and
reason whichever source lists it. Pure logic: the type comes from the format table (formats.py), the size limit
is RagConfig.max_file_mb, the one limit there is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from flows.rag.formats import FORMATS, extension_of, format_for, unsupported_reason

_TYPE_KIND = re.compile(r"^unsupported file type .* \(([a-z ]+)\)$")
# The shapes of every reason decided while listing (type, size, a source's allow-list), older wordings included.
_AT_LISTING = re.compile(
    r"^unsupported file type |^file is [\d.]+ MB, over the [\d.]+ MB limit|is not in the MIME allow-list$"
)


def skip_reason(parse_name: str, mime_type: str | None, size: int | None, max_bytes: int | None) -> str | None:
    """Why the document will not be indexed (one line for the ledger), or None.

    ``parse_name`` is the name the parser picks the format by; ``size`` None (a Google-native file, whose export
    size Drive does not tell) passes the size check, and so does any size when ``max_bytes`` is None."""
    reason = unsupported_reason(parse_name, mime_type)
    if reason:
        return reason
    if size is not None and max_bytes is not None and size > max_bytes:
        return f"file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:g} MB limit (max_file_mb)"
    return None


def parse_name(name: str, mime_type: str | None) -> str | None:
    """The name the parser should pick the format by when ``name``'s extension does not say it and the MIME type
    does ("Q3 report" uploaded to Drive as a PDF -> "Q3 report.pdf"). None: ``name`` itself."""
    found = format_for(name, mime_type)
    if found and extension_of(name) != found[0]:
        return name + found[0]
    return None


def not_allowed_reason(mime_type: str) -> str:
    """A source's own filter (Drive's MIME allow-list) excludes the type."""
    return f"type {mime_type} is not in the MIME allow-list"


def decided_at_listing(reason: str | None) -> bool:
    """Whether a recorded skip reason is one a listing decides (so a later listing may decide otherwise), as
    opposed to one found by reading the file (encrypted, empty, too many chunks)."""
    return bool(_AT_LISTING.search(reason or ""))


def listing_rules(max_bytes: int | None, *source_filters: Iterable[str]) -> str:
    """A fingerprint of what decides a listing's skip reasons (the format table, the size limit, a source's own
    filters): a source whose listing is incremental (Drive's change feed) lists in full when it changes, so that
    files it does not report again are judged anew."""
    text = repr((sorted(FORMATS.items()), max_bytes, [sorted(f) for f in source_filters]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def limit_bytes(max_file_mb: float) -> int:
    """RagConfig.max_file_mb in bytes, as the sources take it."""
    return int(max_file_mb * 2**20)


def skipped_kind(reason: str | None) -> str | None:
    """The file kind a type skip names ("audio", "archive", "no parser", ...), None for any other reason: what
    the sync report counts skipped files by."""
    match = _TYPE_KIND.match(reason or "")
    return match.group(1) if match else None
