"""Saved Prefect blocks as flow settings: the one loader every flow uses, so a wrong name fails the same way.

The rule everywhere: a block named by a ``*_block`` parameter wins over the plain parameters it stands for;
with no block name the plain parameters (or their defaults) are used. Flows load their blocks first, so an
unknown name fails the run before any work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound

from blocks.postgres import PostgresLedger
from blocks.qdrant import QdrantConnection
from flows.common.errors import ConfigError
from flows.common.redact import refuse_password

B = TypeVar("B", bound=Block)


def find_block(block_cls: type[B], name: str) -> B | None:
    """The saved block ``name`` of type ``block_cls``, or None when none is saved under that name."""
    try:
        return block_cls.load(name)
    except ValueError as exc:
        if isinstance(exc.__cause__, ObjectNotFound):
            return None
        raise


def load_block(block_cls: type[B], name: str | None, parameter: str) -> B | None:
    """The saved block ``name`` of type ``block_cls``; None when no name is given (needs the Prefect API).

    Raises ConfigError naming ``parameter`` and the block type when no such block is saved, or when the saved
    one no longer validates (its message lists the fields, never their values)."""
    if not name:
        return None
    kind = f"{block_cls.__name__} block (type {block_cls.get_block_type_name()!r})"
    try:
        block = find_block(block_cls, name)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{parameter}: the saved {kind} {name!r} cannot be loaded: {first}") from None
    if block is None:
        raise ConfigError(
            f"{parameter}: no {block_cls.__name__} block named {name!r}: save a {kind} under that name"
            " (UI: Blocks) or leave the parameter empty"
        )
    return block


def resolve_postgres_url(block_name: str | None, url: str | None, parameter: str) -> str | None:
    """The named PostgresLedger block's URL with its password, else ``url`` (a ``postgres_dsn`` parameter,
    refused when it holds a password). The result may hold a password: pass it on, never log it (``redact``
    for messages)."""
    refuse_password("postgres_dsn", url)
    block = load_block(PostgresLedger, block_name, parameter)
    return block.connection_url() if block else url


def data_dir() -> Path:
    """Home of a node's embedded defaults and reports: SWARM_DATA_DIR, else ~/.swarm (as in the RAG config)."""
    return Path(os.environ.get("SWARM_DATA_DIR") or Path.home() / ".swarm")


def resolve_ledger_url(ledger_block: str | None, url: str | None) -> str:
    """Where a flow's ledger is: its ``ledger_block`` or ``ledger_url`` parameter, else the node's
    SWARM_LEDGER_BLOCK, else SWARM_LEDGER_URL, else the SQLite file under ``data_dir()``. A password may come
    from the block or the environment, never from ``url`` (a run parameter)."""
    refuse_password("ledger_url", url)
    if ledger_block:
        return _ledger_block_url(ledger_block, "ledger_block")
    if url:
        return url
    if node_block := os.environ.get("SWARM_LEDGER_BLOCK"):
        return _ledger_block_url(node_block, "SWARM_LEDGER_BLOCK")
    return os.environ.get("SWARM_LEDGER_URL") or f"sqlite:///{data_dir() / 'ledger.db'}"


def _ledger_block_url(name: str, setting: str) -> str:
    block = load_block(PostgresLedger, name, setting)
    assert block is not None  # a non-empty name loads a block or raises
    return block.connection_url()


def resolve_qdrant(
    qdrant_block: str | None, url: str | None, path: str | None
) -> tuple[str | None, str | None, str | None]:
    """``(url, path, api_key)`` of Qdrant: the named QdrantConnection block (a server) wins over the rest;
    without one, the key is the node's ``QDRANT_API_KEY`` (a key is never a run parameter)."""
    refuse_password("qdrant_url", url)
    if block := load_block(QdrantConnection, qdrant_block, "qdrant_block"):
        return block.url, None, block.api_key_value()
    return url, path, os.environ.get("QDRANT_API_KEY")
