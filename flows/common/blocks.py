"""Connections of every flow: saved Prefect blocks, parameters and the node's settings, in one order.

The order, for every setting that names a service: a block given to the run > an explicit parameter > the
node's block (``SWARM_LEDGER_BLOCK``, ``SWARM_QDRANT_BLOCK``) > the node's environment (``SWARM_LEDGER_URL``,
``SWARM_QDRANT_API_KEY``) > the embedded default under ``data_dir()``. Flows resolve their connections first,
so an unknown block fails the run before any work.

A block parameter is typed ``<BlockClass> | str | None`` (e.g. ``ledger_block: PostgresLedger | str | None``):
the Prefect UI offers the saved blocks of that type and sends ``{"$ref": {"block_document_id": ...}}``, which
Prefect stores as it is (no secret in the run's parameters) and loads into the block before the flow starts;
a plain name (CLI, ``prefect.yaml``, ``-p ledger_block=ledger``) is loaded here. ``resolve_block`` takes both.
Prefect (through the block classes) is imported only once a block is named: a command that names none, such as
``swarm status``, never pays for it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from flows.common.errors import ConfigError
from flows.common.redact import refuse_password

if TYPE_CHECKING:
    from prefect.blocks.core import Block

    from blocks.postgres import PostgresLedger
    from blocks.qdrant import QdrantConnection

B = TypeVar("B", bound="Block")


def find_block(block_cls: type[B], name: str) -> B | None:
    """The saved block ``name`` of type ``block_cls``, or None when none is saved under that name."""
    from prefect.exceptions import ObjectNotFound

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


def resolve_block(block_cls: type[B], value: B | str | None, parameter: str) -> B | None:
    """A block parameter's block: the one the UI picked (Prefect loaded it from the run's ``$ref``), else the
    saved block named ``value``; None when the parameter is empty.

    A block that was never saved is refused: it can only have come as its fields in the run's parameters,
    which Prefect stores in clear, secrets included."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return load_block(block_cls, value, parameter)
    if not isinstance(value, block_cls):
        raise ConfigError(f"{parameter}: a {type(value).__name__} is not a {block_cls.__name__} block")
    if value._block_document_id is None:
        raise ConfigError(f"{parameter}: name a saved {block_cls.__name__} block (UI: Blocks), not its fields")
    return value


def block_name(value: Block | str | None) -> str | None:
    """How to pass a block parameter on to another run: the saved block's name (a reference, never its
    secrets); the receiving run resolves it with ``resolve_block``."""
    if value is None or isinstance(value, str):
        return value or None
    return value._block_document_name


def _ledger_block(value: PostgresLedger | str | None, parameter: str) -> PostgresLedger | None:
    if value is None or value == "":
        return None
    from blocks.postgres import PostgresLedger

    return resolve_block(PostgresLedger, value, parameter)


def _qdrant_block(value: QdrantConnection | str | None, parameter: str) -> QdrantConnection | None:
    if value is None or value == "":
        return None
    from blocks.qdrant import QdrantConnection

    return resolve_block(QdrantConnection, value, parameter)


def resolve_postgres_url(block: PostgresLedger | str | None, url: str | None, parameter: str) -> str | None:
    """The PostgresLedger block's URL with its password, else ``url`` (a ``postgres_dsn`` parameter,
    refused when it holds a password). The result may hold a password: pass it on, never log it (``redact``
    for messages)."""
    refuse_password("postgres_dsn", url)
    found = _ledger_block(block, parameter)
    return found.connection_url() if found else url


def data_dir() -> Path:
    """Home of a node's embedded defaults and reports: SWARM_DATA_DIR, else ~/.swarm."""
    return Path(os.environ.get("SWARM_DATA_DIR") or Path.home() / ".swarm")


def default_ledger_url(home: Path) -> str:
    """The embedded ledger: a SQLite file in the data directory ``home``."""
    return f"sqlite:///{home / 'ledger.db'}"


def resolve_ledger_url(ledger_block: PostgresLedger | str | None, url: str | None, home: Path | None = None) -> str:
    """Where a flow's ledger is: its ``ledger_block`` or ``ledger_url`` parameter, else the node's
    SWARM_LEDGER_BLOCK, else SWARM_LEDGER_URL, else the SQLite file under ``home`` (default ``data_dir()``).
    A password may come from a block or the environment, never from ``url`` (a run parameter)."""
    refuse_password("ledger_url", url)
    if block := _ledger_block(ledger_block, "ledger_block"):
        return block.connection_url()
    if url:
        return url
    if node_block := _ledger_block(os.environ.get("SWARM_LEDGER_BLOCK"), "SWARM_LEDGER_BLOCK"):
        return node_block.connection_url()
    return os.environ.get("SWARM_LEDGER_URL") or default_ledger_url(home or data_dir())


@dataclass(frozen=True)
class QdrantTarget:
    """Where a flow's Qdrant is: a server ``url`` (with ``api_key``), else the embedded store at ``path``."""

    url: str | None
    path: str | None
    api_key: str | None
    collection: str | None = None  # the block's alias; None: the flow's own setting

    def __repr__(self) -> str:  # the key never shows in a log line or a traceback's locals
        return f"QdrantTarget(url={self.url!r}, path={self.path!r}, collection={self.collection!r})"


def resolve_qdrant(qdrant_block: QdrantConnection | str | None, url: str | None, path: str | None) -> QdrantTarget:
    """The QdrantConnection block (a server) wins over ``url``/``path``; else the node's SWARM_QDRANT_BLOCK when
    neither is given; the key without a block is the node's SWARM_QDRANT_API_KEY (never a run parameter)."""
    refuse_password("qdrant_url", url)
    block = _qdrant_block(qdrant_block, "qdrant_block")
    if block is None and not (url or path):
        block = _qdrant_block(os.environ.get("SWARM_QDRANT_BLOCK"), "SWARM_QDRANT_BLOCK")
    if block:
        return QdrantTarget(block.url, None, block.api_key_value(), block.collection)
    return QdrantTarget(url, path, node_qdrant_key())


def node_qdrant_key() -> str | None:
    """The node's SWARM_QDRANT_API_KEY. QDRANT_API_KEY, its former name outside the RAG flows, works for one more
    release, with a warning."""
    if key := os.environ.get("SWARM_QDRANT_API_KEY"):
        return key
    if key := os.environ.get("QDRANT_API_KEY"):
        logging.getLogger("swarm").warning("QDRANT_API_KEY is deprecated: rename it to SWARM_QDRANT_API_KEY")
        return key
    return None
