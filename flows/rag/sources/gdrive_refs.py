"""Drive file resources -> DocumentRefs: versions, the name to parse by, and skip reasons (pure functions)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import NamedTuple

from flows.rag.indexable import not_allowed_reason, parse_name, skip_reason
from flows.rag.readers import PRIVATE, next_lapse, readers_of
from flows.rag.sources.base import DocumentRef, KnownDocument

NATIVE_PREFIX = "application/vnd.google-apps."
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF = "application/pdf"

# Office formats keep what chunk_by_title needs: Docs headings become docx heading styles (unstructured's
# partition_docx turns them into Title elements), each slide's title placeholder survives in pptx, and
# xlsx keeps every sheet (csv would export only the first). Drive's HTML export works too but flattens
# styles into inline spans, so docx gives cleaner titles. A Drawing's PDF keeps its text as text.
EXPORTS: dict[str, tuple[str, str]] = {
    NATIVE_PREFIX + "document": (DOCX, ".docx"),
    NATIVE_PREFIX + "presentation": (PPTX, ".pptx"),
    NATIVE_PREFIX + "spreadsheet": (XLSX, ".xlsx"),
    NATIVE_PREFIX + "drawing": (PDF, ".pdf"),
}

# Who may read a file (flows/rag/readers.py). files.list returns ``permissions`` "only if the requesting user can
# share the file" and never for items in shared drives, "due to the potential size of shared drive ACLs": those
# are read with permissions.list (developers.google.com/workspace/drive/api/guides/shared-drives-diffs).
# A file's permissions include those it inherits from its folders (permissions.list: "inherited ones included").
PERMISSION_FIELDS = "type,role,emailAddress,domain,deleted,expirationTime"
# Field selection: only what the plan and the payload need, so a page of 1000 stays small.
FILE_FIELDS = (
    "id,name,mimeType,parents,trashed,md5Checksum,headRevisionId,modifiedTime,size,driveId,"
    f"webViewLink,shortcutDetails(targetId,targetMimeType),permissions({PERMISSION_FIELDS})"
)


class Access(NamedTuple):
    """Who may read a file at the time it was listed, and when that next shrinks (an expiring grant)."""

    readers: tuple[str, ...]
    lapses: datetime | None


def access_of(item: dict, permissions: list[dict] | None, now: datetime) -> Access:
    """``permissions``: the file's, when not in ``item`` (a shared drive's file); neither: they could not be read,
    and the document is private to the service account."""
    if permissions is None:
        permissions = item.get("permissions")
    if permissions is None:
        return Access(PRIVATE, None)
    return Access(readers_of(permissions, now), next_lapse(permissions, now))


def folder_access(item: dict, now: datetime) -> str | None:
    """What a folder passes on to the files under it, as a comparable string; None when its listing does not say
    (a shared drive's folder, or one this account may not share)."""
    if item.get("permissions") is None:
        return None
    readers, lapses = access_of(item, None, now)
    return json.dumps([readers, lapses.isoformat() if lapses else None])


def is_native(mime: str | None) -> bool:
    return bool(mime and mime.startswith(NATIVE_PREFIX))


# A Google-native file has no md5Checksum, and headRevisionId "is currently only available for files with binary
# content"; its ``version`` "reflects every change made to the file on the server", renames and sharing included
# (developers.google.com/workspace/drive/api/reference/rest/v3/files). ``modifiedTime`` moves on an edit and on a
# rename too ("the modified date will only be updated ... if other changes are also being made (changing the
# title, for example)", developers.google.com/drive/v1/reference/files/patch), not on a sharing change. So the
# content version of a native file is kept while its modifiedTime stays, and also when it moved but the head
# revision (revisions.list: each revision's modifiedTime, developers.google.com/workspace/drive/api/reference/rest/
# v3/revisions) is no newer than what was indexed: a rename, re-exported only when the content moved.
def needs_revision(item: dict, known: KnownDocument | None) -> bool:
    """Whether only the head revision can tell if this native file's content moved since ``known``."""
    return (
        is_native(item.get("mimeType"))
        and known is not None
        and bool(known.modified)
        and known.modified != item.get("modifiedTime")
    )


def version_of(item: dict, known: KnownDocument | None = None, revised: str | None = None) -> str:
    """Content version: md5/head revision for binary files. A Google-native one keeps ``known``'s version while
    its content did not move (``revised``: the head revision's modifiedTime, when needs_revision asked for it);
    else it is tagged by its modifiedTime."""
    if is_native(item.get("mimeType")):
        stamp = item.get("modifiedTime") or ""
        if (
            known is not None
            and known.modified
            and (known.modified == stamp or (revised is not None and _not_after(revised, known.modified)))
        ):
            return known.version
        return f"m:{stamp}"
    for key, tag in (("md5Checksum", "md5"), ("headRevisionId", "rev"), ("modifiedTime", "m")):
        if item.get(key):
            return f"{tag}:{item[key]}"
    return "unknown"


def _not_after(first: str, second: str) -> bool:
    """RFC 3339 times compared as instants (Drive writes "…Z"; a stored one may carry "+00:00")."""
    try:
        return datetime.fromisoformat(first) <= datetime.fromisoformat(second)
    except ValueError:
        return False  # unreadable: treat the content as moved


def drive_parse_name(name: str, mime: str | None) -> str | None:
    """An export is parsed by its format's extension ("Notes" -> "Notes.docx"); None: ``name`` itself."""
    return name + EXPORTS[mime][1] if mime in EXPORTS else parse_name(name, mime)


def skip_of(item: dict, allowlist: set[str], max_bytes: int | None) -> str | None:
    """Why this file will not be indexed, or None, decided from the listing alone: nothing is downloaded for it."""
    mime = item.get("mimeType") or "unknown"
    name = item.get("name", "")
    if is_native(mime) and mime not in EXPORTS:
        return f"unsupported file type {mime} (no export)"
    export_mime = EXPORTS[mime][0] if mime in EXPORTS else mime
    reason = skip_reason(drive_parse_name(name, mime) or name, export_mime, _size(item), max_bytes)
    if reason:
        return reason
    if allowlist and mime not in allowlist:
        return not_allowed_reason(mime)
    return None


def _size(item: dict) -> int | None:
    """Bytes of a binary file; None for a Google-native one (Drive does not tell an export's size)."""
    size = item.get("size")
    return int(size) if size is not None and not is_native(item.get("mimeType")) else None


def to_ref(
    item: dict,
    path: str,
    allowlist: set[str],
    max_bytes: int | None,
    known: KnownDocument | None = None,
    revised: str | None = None,
    readers: tuple[str, ...] = PRIVATE,
) -> DocumentRef:
    """``known``/``revised``: see version_of; ``readers``: access_of's."""
    name = item.get("name", "")
    mime = item.get("mimeType")
    return DocumentRef(
        doc_id=item["id"],
        name=name,
        path=path,
        mime_type=mime,
        version=version_of(item, known, revised),
        size=_size(item),
        modified=item.get("modifiedTime"),
        parse_name=drive_parse_name(name, mime),
        link=item.get("webViewLink"),
        skip_reason=skip_of(item, allowlist, max_bytes),
        readers=readers,
    )
