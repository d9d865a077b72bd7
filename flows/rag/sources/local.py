"""The local-folder source: a recursive walk compared by size, mtime and content hash."""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from flows.common.errors import ConfigError
from flows.rag.sources.base import ChangeSet, DocumentRef, FetchError, KnownDocument

_HASH_BLOCK = 1 << 20


class LocalFolderSpec(BaseModel):
    """A folder on the node that runs the sync (every file under it, hidden ones excluded)."""

    kind: Literal["local"] = "local"
    path: str = Field(description="Absolute or relative folder path.")

    def build(self, db: object = None) -> LocalFolderSource:
        return LocalFolderSource(Path(self.path))


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class LocalFolderSource:
    def __init__(self, root: Path, max_hash_bytes: int | None = None) -> None:
        root = root.expanduser()
        if not root.is_dir():
            raise ConfigError(f"source folder {str(root)!r} does not exist or is not a folder")
        self.root = root.resolve()
        # Files above this size are versioned by size+mtime: hashing them only to skip them is waste.
        self.max_hash_bytes = max_hash_bytes

    @property
    def source_id(self) -> str:
        return f"local:{self.root}"

    def _walk(self) -> Iterator[os.DirEntry[str]]:
        stack = [str(self.root)]
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file() or entry.is_symlink():
                            yield entry
            except OSError:
                continue  # an unreadable folder yields nothing; its files count as removed

    def _version(self, path: Path, size: int, mtime_ns: int, known: KnownDocument | None) -> str:
        if known and known.size == size and known.mtime_ns == mtime_ns:
            return known.version  # unchanged since last walk: no need to read it again
        if self.max_hash_bytes is not None and size > self.max_hash_bytes:
            return f"stat:{size}:{mtime_ns}"
        try:
            return content_hash(path)
        except OSError as exc:
            # Unreadable now: give it a version that changes with the file, ingestion records why.
            return f"unreadable:{size}:{mtime_ns}:{exc.errno}"

    def changes(self, cursor: str | None, known: Mapping[str, KnownDocument]) -> ChangeSet:
        documents: list[DocumentRef] = []
        for entry in self._walk():
            path = Path(entry.path)
            doc_id = path.relative_to(self.root).as_posix()
            try:
                stat = entry.stat()
                size, mtime_ns = stat.st_size, stat.st_mtime_ns
            except OSError:  # a dangling symlink: listed so the ledger shows it as failed
                size, mtime_ns = 0, 0
            documents.append(
                DocumentRef(
                    doc_id=doc_id,
                    name=path.name,
                    path=doc_id,
                    mime_type=mimetypes.guess_type(path.name)[0],
                    version=self._version(path, size, mtime_ns, known.get(doc_id)),
                    size=size,
                    modified=datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat() if mtime_ns else None,
                    mtime_ns=mtime_ns,
                )
            )
        return ChangeSet(documents=documents, complete=True)

    @contextmanager
    def fetch(self, ref: DocumentRef) -> Iterator[Path]:
        path = self.root / ref.doc_id
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise FetchError(f"cannot read file: {exc.strerror or exc}") from exc
        yield path
