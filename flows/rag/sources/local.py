"""The local-folder source: a recursive walk compared by size, mtime and content hash.

The walk lists what it can and reports what it cannot. An entry it cannot read (a folder or file that cannot
be opened or stat'ed, a symlink loop) is an unseen problem: the documents at or under it keep their state,
because "could not list" is no evidence of "deleted". Only regular files are documents: named pipes, sockets
and devices are reported and never opened, and a symlink is followed only to a file inside the folder (a broken
one is listed, so that the ledger records it as failed and it is retried once its target exists).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field

from flows.common.errors import ConfigError
from flows.rag.indexable import parse_name, skip_reason
from flows.rag.sources.base import ChangeSet, DocumentRef, FetchError, KnownDocument, ListingProblem

_HASH_BLOCK = 1 << 20
_SPECIAL = {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}
_BROKEN_LINK = "broken-link"  # the version of a link to a missing file inside the folder


class LocalFolderSpec(BaseModel):
    """A folder on the node that runs the sync (every file under it, hidden ones excluded)."""

    kind: Literal["local"] = "local"
    path: str = Field(description="Absolute or relative folder path.")
    follow_links: bool = Field(
        True, description="Follow symlinks to files inside the folder; links leading out of it are always skipped."
    )

    def check(self) -> None:
        """One line, before any work, when the folder is missing on this node."""
        folder_root(Path(self.path))

    def build(self, db: object, max_file_bytes: int) -> LocalFolderSource:
        return LocalFolderSource(Path(self.path), max_file_bytes, self.follow_links)


def folder_root(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_dir():
        raise ConfigError(f"source folder {str(path)!r} does not exist or is not a folder on this node")
    return path.resolve()


def _open_regular(path: Path | str) -> BinaryIO:
    """Open for reading only if it is a regular file. Non-blocking: a named pipe put in place of a file after
    the walk's stat must not block the reader (opening a pipe for reading waits for a writer)."""
    handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise OSError(f"{path} is no longer a regular file")
    return handle


def content_hash(path: Path, limit: int | None = None) -> str | None:
    """sha256 of the file; None once more than ``limit`` bytes were read (it grew past the size limit)."""
    digest, read = hashlib.sha256(), 0
    with _open_regular(path) as handle:
        while block := handle.read(_HASH_BLOCK):
            read += len(block)
            if limit is not None and read > limit:
                return None
            digest.update(block)
    return digest.hexdigest()


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# A listed file: (doc_id, stat), the stat None for a broken link.
_Listed = tuple[str, os.stat_result | None]


def _regular(doc_id: str, info: os.stat_result) -> _Listed | ListingProblem:
    if stat.S_ISREG(info.st_mode):
        return doc_id, info
    kind = _SPECIAL.get(stat.S_IFMT(info.st_mode), "not a regular file")
    return ListingProblem(doc_id, f"{kind}: not read", unseen=False)


class LocalFolderSource:
    def __init__(self, root: Path, max_file_bytes: int | None = None, follow_links: bool = True) -> None:
        self.root = folder_root(root)
        self.max_file_bytes = max_file_bytes  # RagConfig.max_file_mb; None: no limit
        self.follow_links = follow_links

    @property
    def source_id(self) -> str:
        return f"local:{self.root}"

    def _walk(self) -> Iterator[_Listed | ListingProblem]:
        """Every regular file, and a problem for every entry that is not one or cannot be read.
        A folder that fails part-way keeps what it listed and is reported unseen as a whole."""
        stack = [""]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(self.root / folder) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        doc_id = f"{folder}/{entry.name}" if folder else entry.name
                        item = self._classify(entry, doc_id)
                        if item is None:
                            stack.append(doc_id)
                        else:
                            yield item
            except OSError as exc:
                yield ListingProblem(folder, f"cannot read folder: {_reason(exc)}", unseen=True)

    def _classify(self, entry: os.DirEntry[str], doc_id: str) -> _Listed | ListingProblem | None:
        """None for a folder to descend into."""
        try:
            if entry.is_symlink():
                return self._follow(entry.path, doc_id)
            if entry.is_dir(follow_symlinks=False):
                return None
            return _regular(doc_id, entry.stat(follow_symlinks=False))
        except OSError as exc:  # a symlink loop, a permission denied on stat, ...
            return ListingProblem(doc_id, f"cannot stat: {_reason(exc)}", unseen=True)

    def _follow(self, path: str, doc_id: str) -> _Listed | ListingProblem:
        if not Path(os.path.realpath(path)).is_relative_to(self.root):
            return ListingProblem(doc_id, "symlink leading out of the folder: not followed", unseen=False)
        if not self.follow_links:
            return ListingProblem(doc_id, "symlink: not followed (follow_links is off)", unseen=False)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return doc_id, None
        if stat.S_ISDIR(info.st_mode):
            return ListingProblem(doc_id, "symlink to a folder: not followed", unseen=False)
        return _regular(doc_id, info)

    def _version(self, path: Path, size: int, mtime_ns: int, known: KnownDocument | None, skipped: bool) -> str:
        if known and known.size == size and known.mtime_ns == mtime_ns:
            return known.version  # unchanged since last walk: no need to read it again
        by_stat = f"stat:{size}:{mtime_ns}"
        if skipped:  # not indexable (its type, its size): never read, versioned by size+mtime
            return by_stat
        return content_hash(path, self.max_file_bytes) or by_stat

    def changes(self, cursor: str | None, known: Mapping[str, KnownDocument]) -> ChangeSet:
        documents: list[DocumentRef] = []
        problems: list[ListingProblem] = []
        for item in self._walk():
            if isinstance(item, ListingProblem):
                problems.append(item)
                continue
            doc_id, info = item
            path = self.root / doc_id
            size, mtime_ns = (info.st_size, info.st_mtime_ns) if info else (0, 0)
            mime_type = mimetypes.guess_type(path.name)[0]
            parse_as = parse_name(path.name, mime_type)
            skip = skip_reason(parse_as or path.name, mime_type, size if info else None, self.max_file_bytes)
            try:
                version = self._version(path, size, mtime_ns, known.get(doc_id), bool(skip)) if info else _BROKEN_LINK
            except OSError as exc:  # listed but unreadable now: its last known state stands
                problems.append(ListingProblem(doc_id, f"cannot read: {_reason(exc)}", unseen=True))
                continue
            documents.append(
                DocumentRef(
                    doc_id=doc_id,
                    name=path.name,
                    path=doc_id,
                    mime_type=mime_type,
                    version=version,
                    size=size,
                    modified=datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat() if info else None,
                    mtime_ns=mtime_ns,
                    parse_name=parse_as,
                    skip_reason=skip,
                )
            )
        return ChangeSet(documents=documents, complete=True, problems=problems)

    @contextmanager
    def fetch(self, ref: DocumentRef) -> Iterator[Path]:
        path = self.root / ref.doc_id
        try:
            if not Path(os.path.realpath(path)).is_relative_to(self.root):
                raise OSError("it now leads out of the folder")
            _open_regular(path).close()
        except OSError as exc:
            raise FetchError(f"cannot read file: {_reason(exc)}") from exc
        yield path
