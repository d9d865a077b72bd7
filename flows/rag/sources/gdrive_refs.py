"""Drive file resources -> DocumentRefs: versions, export formats, and skip reasons (pure functions)."""

from __future__ import annotations

from flows.rag.sources.base import DocumentRef

NATIVE_PREFIX = "application/vnd.google-apps."
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Office formats keep what chunk_by_title needs: Docs headings become docx heading styles (unstructured's
# partition_docx turns them into Title elements), each slide's title placeholder survives in pptx, and
# xlsx keeps every sheet (csv would export only the first). Drive's HTML export works too but flattens
# styles into inline spans, so docx gives cleaner titles.
EXPORTS: dict[str, tuple[str, str]] = {
    NATIVE_PREFIX + "document": (DOCX, ".docx"),
    NATIVE_PREFIX + "presentation": (PPTX, ".pptx"),
    NATIVE_PREFIX + "spreadsheet": (XLSX, ".xlsx"),
}

# Binary types by extension, for Drive files named without one ("Q3 report" uploaded as a PDF): the
# parsers choose by extension, so the ref carries the one its MIME type implies.
EXTENSIONS: dict[str, str] = {
    "application/pdf": ".pdf",
    DOCX: ".docx",
    PPTX: ".pptx",
    XLSX: ".xlsx",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/html": ".html",
    "text/csv": ".csv",
}

DEFAULT_MIME_ALLOWLIST = [
    *EXPORTS,
    "application/pdf",
    DOCX,
    PPTX,
    XLSX,
    "text/plain",
    "text/markdown",
    "text/html",
    "text/csv",
]

# Field selection: only what the plan and the payload need, so a page of 1000 stays small.
FILE_FIELDS = (
    "id,name,mimeType,parents,trashed,md5Checksum,headRevisionId,version,modifiedTime,size,"
    "webViewLink,driveId,shortcutDetails(targetId,targetMimeType)"
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


def skip_reason(item: dict, allowlist: set[str], max_bytes: int) -> str | None:
    """Why this file will not be ingested, or None. fetch() raises FetchError with it."""
    mime = item.get("mimeType") or "unknown"
    if mime not in allowlist:
        return f"type {mime} is not in the MIME allow-list"
    size = item.get("size")
    if size is not None and not is_native(mime) and int(size) > max_bytes:
        return f"{int(size) / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB limit"
    return None


def to_ref(item: dict, path: str, allowlist: set[str], max_bytes: int) -> DocumentRef:
    mime = item.get("mimeType")
    native = is_native(mime)
    extra: dict[str, str] = {}
    if item.get("webViewLink"):
        extra["web_link"] = item["webViewLink"]
    if item.get("driveId"):
        extra["drive_id"] = item["driveId"]
    if mime in EXPORTS:
        extra["export_mime"], extra["export_extension"] = EXPORTS[mime]
        extra["export_name"] = item.get("name", "") + EXPORTS[mime][1]  # parsers pick by extension
    elif mime in EXTENSIONS and not item.get("name", "").lower().endswith(EXTENSIONS[mime]):
        extra["export_extension"] = EXTENSIONS[mime]
        extra["export_name"] = item.get("name", "") + EXTENSIONS[mime]
    reason = skip_reason(item, allowlist, max_bytes)
    if reason:
        extra["skip_reason"] = reason
    size = item.get("size")
    return DocumentRef(
        doc_id=item["id"],
        name=item.get("name", ""),
        path=path,
        mime_type=mime,
        version=version_of(item),
        size=int(size) if size is not None and not native else None,
        modified=item.get("modifiedTime"),
        extra=extra,
    )
