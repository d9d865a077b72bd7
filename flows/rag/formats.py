"""The one table of what can be parsed: by extension, with the MIME types that name the same formats.

Decidable before any byte is downloaded (a Drive listing gives the name and the MIME type), so a file
nothing can index is never fetched. Pure data and lookups: no Prefect, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

# How a format reaches unstructured's elements (flows/rag/parse.py dispatches on it):
#   text: unstructured's own fast partitioner; pdf: text layer, OCR for pages without one;
#   image: OCR; office: LibreOffice converts it to its OOXML sibling first; pandoc: pandoc converts it to HTML;
#   email: the message's body plus each attachment parsed as a file of its own.
Route = Literal["text", "pdf", "image", "office", "pandoc", "email"]


@dataclass(frozen=True, slots=True)
class Format:
    route: Route
    mime_types: tuple[str, ...]


FORMATS: dict[str, Format] = {
    ".pdf": Format("pdf", ("application/pdf",)),
    ".docx": Format("text", ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",)),
    ".pptx": Format("text", ("application/vnd.openxmlformats-officedocument.presentationml.presentation",)),
    ".xlsx": Format("text", ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",)),
    ".html": Format("text", ("text/html",)),
    ".htm": Format("text", ()),
    ".xhtml": Format("text", ("application/xhtml+xml",)),
    ".md": Format("text", ("text/markdown", "text/x-markdown")),
    ".markdown": Format("text", ()),
    ".txt": Format("text", ("text/plain",)),
    ".text": Format("text", ()),
    ".rst": Format("text", ("text/x-rst",)),
    ".csv": Format("text", ("text/csv",)),
    ".tsv": Format("text", ("text/tab-separated-values",)),
    ".png": Format("image", ("image/png",)),
    ".jpg": Format("image", ("image/jpeg",)),
    ".jpeg": Format("image", ()),
    ".tif": Format("image", ("image/tiff",)),
    ".tiff": Format("image", ()),
    ".bmp": Format("image", ("image/bmp", "image/x-ms-bmp")),
    ".webp": Format("image", ("image/webp",)),
    ".heic": Format("image", ("image/heic", "image/heif")),
    ".heif": Format("image", ()),
    ".doc": Format("office", ("application/msword",)),
    ".ppt": Format("office", ("application/vnd.ms-powerpoint",)),
    ".xls": Format("office", ("application/vnd.ms-excel",)),
    ".odp": Format("office", ("application/vnd.oasis.opendocument.presentation",)),
    ".ods": Format("office", ("application/vnd.oasis.opendocument.spreadsheet",)),
    ".odt": Format("pandoc", ("application/vnd.oasis.opendocument.text",)),
    ".rtf": Format("pandoc", ("application/rtf", "text/rtf")),
    ".epub": Format("pandoc", ("application/epub+zip",)),
    ".eml": Format("email", ("message/rfc822",)),
    ".msg": Format("email", ("application/vnd.ms-outlook",)),
}

_BY_MIME = {mime: extension for extension, fmt in FORMATS.items() for mime in fmt.mime_types}

# Kinds named in the reason of what cannot be indexed, so the sync report can count skips by type.
_UNSUPPORTED_KINDS: dict[str, tuple[str, ...]] = {
    "audio": (".mp3", ".wav", ".flac", ".ogg", ".oga", ".m4a", ".aac", ".wma", ".opus", ".aiff", ".mid"),
    "video": (".mp4", ".mov", ".avi", ".mkv", ".webm", ".wmv", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp"),
    "archive": (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".iso", ".dmg"),
    "executable": (".exe", ".dll", ".so", ".bin", ".msi", ".apk", ".deb", ".rpm", ".jar", ".class"),
    "font": (".ttf", ".otf", ".woff", ".woff2"),
    "database": (".db", ".sqlite", ".mdb", ".accdb"),
}
_KIND_BY_EXTENSION = {ext: kind for kind, extensions in _UNSUPPORTED_KINDS.items() for ext in extensions}
_KIND_BY_MIME_PREFIX = {"audio/": "audio", "video/": "video", "font/": "font"}


def extension_of(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def format_for(name: str, mime_type: str | None = None) -> tuple[str, Format] | None:
    """The format ``name`` is parsed as (its extension, else its MIME type's), with the extension it stands for."""
    extension = extension_of(name)
    if extension in FORMATS:
        return extension, FORMATS[extension]
    by_mime = _BY_MIME.get((mime_type or "").split(";")[0].strip().lower())
    return (by_mime, FORMATS[by_mime]) if by_mime else None


def unsupported_reason(name: str, mime_type: str | None = None) -> str | None:
    """None when a parser exists for the file, else one line for the ledger, e.g.
    "unsupported file type .mp3 (audio)": the kind in brackets is what the sync report counts by."""
    if format_for(name, mime_type):
        return None
    extension = extension_of(name)
    kind = _KIND_BY_EXTENSION.get(extension)
    mime = (mime_type or "").lower()
    if kind is None:
        kind = next((k for prefix, k in _KIND_BY_MIME_PREFIX.items() if mime.startswith(prefix)), None)
    if kind is None and mime in {
        "application/zip",
        "application/x-tar",
        "application/gzip",
        "application/x-7z-compressed",
    }:
        kind = "archive"
    shown = extension or (f"{mime} (no extension)" if mime else "(no extension)")
    return f"unsupported file type {shown} ({kind or 'no parser'})"
