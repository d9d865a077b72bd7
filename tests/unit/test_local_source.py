from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from flows.common.errors import ConfigError
from flows.rag.sources.base import ChangeSet, FetchError, KnownDocument
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


def test_what_cannot_be_indexed_is_listed_with_the_reason_and_never_read(tmp_path: Path) -> None:
    with open(tmp_path / "huge.pdf", "wb") as huge:
        huge.truncate(3 * 2**20)  # sparse: no disk used
    (tmp_path / "talk.mp3").write_bytes(b"ID3")
    (tmp_path / "a.txt").write_text("alpha")
    docs = {d.doc_id: d for d in LocalFolderSource(tmp_path, max_file_bytes=2**20).changes(None, {}).documents}
    assert {i: d.skip_reason for i, d in docs.items()} == {
        "huge.pdf": "file is 3.0 MB, over the 1 MB limit (max_file_mb)",
        "talk.mp3": "unsupported file type .mp3 (audio)",
        "a.txt": None,
    }
    # Versioned by size and mtime: their content is not read to hash it.
    assert docs["huge.pdf"].version.startswith("stat:") and docs["talk.mp3"].version.startswith("stat:")
    assert docs["a.txt"].version == content_hash(tmp_path / "a.txt")


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


def test_a_broken_link_is_listed_and_its_fetch_is_a_fetch_error(tmp_path: Path) -> None:
    os.symlink(tmp_path / "missing.txt", tmp_path / "link.txt")
    source = LocalFolderSource(tmp_path)
    [ref] = source.changes(None, {}).documents  # the ledger records it as failed, retried once the target exists
    with pytest.raises(FetchError, match="cannot read file"), source.fetch(ref):
        pass
    (tmp_path / "missing.txt").write_text("here now")
    assert source.changes(None, {}).documents[0].version != ref.version


def problems(changes: ChangeSet) -> dict[str, tuple[bool, str]]:
    return {p.path: (p.unseen, p.reason) for p in changes.problems}


def test_a_symlink_loop_is_reported_and_the_rest_of_its_folder_is_listed(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.txt", "sub/b.txt", "sub/c.txt"):
        (tmp_path / name).write_text(name)
    os.symlink("loop", tmp_path / "loop")  # fails for root too
    os.symlink("self", tmp_path / "sub" / "self")
    changes = LocalFolderSource(tmp_path).changes(None, {})
    assert {d.doc_id for d in changes.documents} == {"a.txt", "sub/b.txt", "sub/c.txt"}
    found = problems(changes)
    assert found.keys() == {"loop", "sub/self"}
    assert found["loop"] == (True, "cannot stat: Too many levels of symbolic links")
    assert sorted(changes.unseen) == ["loop", "sub/self"]


@pytest.mark.timeout(30)
def test_pipes_devices_sockets_and_links_out_of_the_folder_are_skipped_unopened(tmp_path: Path) -> None:
    root, outside = tmp_path / "docs", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "sub").mkdir()
    (root / "a.txt").write_text("alpha")
    (outside / "secret.txt").write_text("not for the index")
    os.mkfifo(root / "pipe.txt")
    os.symlink(root / "pipe.txt", root / "to-pipe.txt")
    os.symlink("/dev/zero", root / "zeros.txt")
    os.symlink(outside / "secret.txt", root / "secret.txt")
    os.symlink("a.txt", root / "alias.txt")
    os.symlink("sub", root / "sub-link")
    os.symlink("missing.txt", root / "dangling.txt")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "sock"))
        changes = LocalFolderSource(root).changes(None, {})
    # A link within the folder is followed; a broken one is listed (the ledger records it as failed).
    assert {d.doc_id for d in changes.documents} == {"a.txt", "alias.txt", "dangling.txt"}
    assert problems(changes) == {
        "pipe.txt": (False, "a named pipe: not read"),
        "to-pipe.txt": (False, "a named pipe: not read"),
        "zeros.txt": (False, "symlink leading out of the folder: not followed"),
        "secret.txt": (False, "symlink leading out of the folder: not followed"),
        "sub-link": (False, "symlink to a folder: not followed"),
        "sock": (False, "a socket: not read"),
    }
    refused = LocalFolderSource(root, follow_links=False).changes(None, {})
    assert {d.doc_id for d in refused.documents} == {"a.txt"}
    assert problems(refused)["alias.txt"] == (False, "symlink: not followed (follow_links is off)")


@pytest.mark.timeout(30)
def test_reads_stop_at_the_size_limit_and_never_open_a_pipe(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 5000)
    assert content_hash(big, limit=4096) is None  # more than the limit: never read to the end
    assert content_hash(big, limit=5000) == content_hash(big)
    with pytest.raises(OSError, match="no longer a regular file"):
        content_hash(Path("/dev/zero"), limit=4096)
    [ref] = LocalFolderSource(tmp_path, max_file_bytes=4096).changes(None, {}).documents
    assert ref.version.startswith("stat:5000:")  # over the limit: versioned without reading
    # A named pipe put in place of a listed file is refused at fetch instead of blocking the reader.
    source = LocalFolderSource(tmp_path)
    [ref] = source.changes(None, {}).documents
    big.unlink()
    os.mkfifo(big)
    with pytest.raises(FetchError, match="no longer a regular file"), source.fetch(ref):
        pass


def _walk_as_unprivileged(root: Path) -> dict[str, Any]:
    """The walk in a forked child that is ``nobody``: root reads everything whatever the modes."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and never returns
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            changes = LocalFolderSource(root).changes(None, {})
            found = {"documents": sorted(d.doc_id for d in changes.documents)}
            found["problems"] = {p.path: [p.unseen, p.reason] for p in changes.problems}
            os.write(write_end, json.dumps(found).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    os.waitpid(child, 0)
    assert output, "the unprivileged walk crashed"
    return json.loads(output)


def test_an_unreadable_folder_or_file_is_unseen_for_a_user_without_access() -> None:
    base = Path(tempfile.mkdtemp(prefix="swarm-perm-"))
    try:
        base.chmod(0o755)
        for name in ("a.txt", "z.txt", "locked/b.txt", "shut/c.txt", "secret.txt"):
            (base / name).parent.mkdir(exist_ok=True)
            (base / name).write_text(name)
        (base / "locked").chmod(0o000)  # cannot be listed
        (base / "shut").chmod(0o744)  # others may list it but not stat its entries
        (base / "secret.txt").chmod(0o000)  # cannot be read for hashing
        seen = _walk_as_unprivileged(base)
    finally:
        for folder in ("locked", "shut"):
            (base / folder).chmod(0o755)
        shutil.rmtree(base)
    assert seen["documents"] == ["a.txt", "z.txt"]
    assert seen["problems"] == {
        "locked": [True, "cannot read folder: Permission denied"],
        "shut/c.txt": [True, "cannot stat: Permission denied"],
        "secret.txt": [True, "cannot read: Permission denied"],
    }
