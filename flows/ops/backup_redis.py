"""Redis backup: an RDB copy taken over the network with ``redis-cli --rdb`` (a replica-style sync).

Verified by the RDB framing: the ``REDIS`` magic at the start and the EOF opcode (0xFF) followed by the
8-byte checksum at the end, so a truncated transfer is caught. Restoring an RDB means stopping Redis and
putting the file in its ``dir``: that is left to the operator (the restore flow prints the steps).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flows.ops.backup_catalog import BackupFailed, run_tool


def redis_target(url: str) -> str:
    """The catalog's name for a Redis server: host and port only, never the credentials a URL may hold."""
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}-{parts.port or 6379}"


def dump_rdb(url: str, dest: Path, timeout_s: float = 1800, password: str | None = None) -> None:
    """``password`` (a RedisServer block's) wins over one in the URL."""
    parts = urlsplit(url)
    args = ["redis-cli", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    env = dict(os.environ)
    if parts.username:
        args += ["--user", unquote(parts.username)]
    if password or parts.password:
        # not on the command line, where ps shows it
        env["REDISCLI_AUTH"] = password or unquote(parts.password or "")
    run_tool([*args, "--rdb", str(dest)], "redis-cli --rdb", timeout_s, env)
    verify_rdb(dest)


def verify_rdb(path: Path) -> str:
    size = path.stat().st_size if path.exists() else 0
    if size < 9 + 9:
        raise BackupFailed(f"RDB file {path.name} is missing or too small ({size} bytes)")
    with path.open("rb") as fh:
        head = fh.read(9)
        fh.seek(-9, os.SEEK_END)
        tail = fh.read(9)
    if not head.startswith(b"REDIS"):
        raise BackupFailed(f"RDB file {path.name} lacks the REDIS magic header")
    if tail[0] != 0xFF:
        raise BackupFailed(f"RDB file {path.name} is truncated (no end-of-file marker)")
    return f"RDB version {head[5:].decode(errors='replace')}, {size} bytes"
