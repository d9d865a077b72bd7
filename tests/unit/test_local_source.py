from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.common.errors import ConfigError
from flows.rag.sources.base import FetchError, KnownDocument
from flows.rag.sources.local import LocalFolderSource, content_hash


def test_walk_lists_files_recursively_with_hash_versions(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.md").write_text("beta")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.txt").write_text("x")
    changes = LocalFolderSource(tmp_path).changes(None, {})
    docs = {d.doc_id: d for d in changes.documents}
    assert set(docs) == {"a.txt", "sub/b.md"}
    assert changes.complete
    assert docs["sub/b.md"].version == content_hash(tmp_path / "sub" / "b.md")
    assert docs["sub/b.md"].mime_type == "text/markdown"
    assert docs["a.txt"].size == 5


def test_unchanged_size_and_mtime_skip_rehashing(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("alpha")
    stat = path.stat()
    known = {"a.txt": KnownDocument(version="remembered", size=stat.st_size, mtime_ns=stat.st_mtime_ns)}
    source = LocalFolderSource(tmp_path)
    assert source.changes(None, known).documents[0].version == "remembered"
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: hashed again
    assert source.changes(None, known).documents[0].version == content_hash(path)


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        LocalFolderSource(tmp_path / "nope")


def test_fetch_of_a_dangling_link_is_a_fetch_error(tmp_path: Path) -> None:
    os.symlink(tmp_path / "missing.txt", tmp_path / "link.txt")
    source = LocalFolderSource(tmp_path)
    [ref] = source.changes(None, {}).documents
    with pytest.raises(FetchError, match="cannot read file"), source.fetch(ref):
        pass
