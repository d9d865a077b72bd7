"""Drive file resources -> DocumentRefs: versions, the name to parse by, and skip reasons (pure functions)."""

from __future__ import annotations

from flows.rag.indexable import not_allowed_reason, parse_name, skip_reason
from flows.rag.sources.base import DocumentRef

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

# Field selection: only what the plan and the payload need, so a page of 1000 stays small.
FILE_FIELDS = (
    "id,name,mimeType,parents,trashed,md5Checksum,headRevisionId,version,modifiedTime,size,"
    "webViewLink,shortcutDetails(targetId,targetMimeType)"
)


def is_native(mime: str | None) -> bool:
    return bool(mime and mime.startswith(NATIVE_PREFIX))


def version_of(item: dict) -> str:
    """Content version: md5/head revision for binary files; Drive's ``version`` for Google-native ones."""
    if is_native(item.get("mimeType")):
        if item.get("version"):
            return f"v{item['version']}"
        return f"m{item.get('modifiedTime', '')}"
    for key, tag in (("md5Checksum", "md5"), ("headRevisionId", "rev"), ("modifiedTime", "m")):
        if item.get(key):
            return f"{tag}:{item[key]}"
    return "unknown"


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


def to_ref(item: dict, path: str, allowlist: set[str], max_bytes: int | None) -> DocumentRef:
    name = item.get("name", "")
    mime = item.get("mimeType")
    return DocumentRef(
        doc_id=item["id"],
        name=name,
        path=path,
        mime_type=mime,
        version=version_of(item),
        size=_size(item),
        modified=item.get("modifiedTime"),
        parse_name=drive_parse_name(name, mime),
        link=item.get("webViewLink"),
        skip_reason=skip_of(item, allowlist, max_bytes),
    )
