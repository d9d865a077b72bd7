"""Opening what the RAG flows work with (ledger, vector store, source) from one validated config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from blocks.postgres import PostgresLedger
from blocks.qdrant import QdrantConnection
from flows.common.blocks import load_block
from flows.common.db import Database
from flows.rag.config import RagConfig
from flows.rag.ledger import RagLedger
from flows.rag.model_files import model_dimension
from flows.rag.sources.base import Source
from flows.rag.sources.gdrive import GoogleDriveSpec
from flows.rag.sources.local import LocalFolderSpec

if TYPE_CHECKING:
    from flows.rag.store import VectorStore

# Every source's spec, discriminated by ``kind``; the Prefect UI renders it as a form with one branch per source.
SourceSpec = Annotated[LocalFolderSpec | GoogleDriveSpec, Field(discriminator="kind")]


@dataclass
class RagServices:
    config: RagConfig
    db: Database
    ledger: RagLedger
    _store: VectorStore | None = field(default=None, repr=False)

    @property
    def store(self) -> VectorStore:
        """Opened on first use: a dispatching rag-sync never opens it (embedded Qdrant admits one process), nor does
        a sync with nothing to do (embedded Qdrant reads every point when it opens)."""
        if self._store is None:
            self._store = open_store(self.config)
        return self._store

    def source(self, spec: SourceSpec) -> Source:
        if isinstance(spec, LocalFolderSpec):  # its walk reads no file past the size limit the ingest applies
            return spec.build(max_file_bytes=int(self.config.max_file_mb * 2**20))
        return spec.build(self.db)


def resolve_blocks(config: RagConfig) -> RagConfig:
    """Fill the connection fields from the named blocks, if any (needs the Prefect API)."""
    update: dict[str, Any] = {}
    if qdrant := load_block(QdrantConnection, config.qdrant_block, "qdrant_block"):
        update |= {"qdrant_url": qdrant.url, "qdrant_api_key": qdrant.api_key, "collection": qdrant.collection}
    if ledger := load_block(PostgresLedger, config.ledger_block, "ledger_block"):
        update["ledger_url"] = ledger.connection_url()
    return config.model_copy(update=update) if update else config


def open_store(config: RagConfig) -> VectorStore:
    from flows.rag.store import VectorStore, open_qdrant  # qdrant-client takes 0.7 s to import; not every run needs it

    api_key = config.qdrant_api_key.get_secret_value() if config.qdrant_api_key else None
    client = open_qdrant(config.qdrant_url, api_key, config.resolved_qdrant_path)
    store = VectorStore(client, config.collection, config.embedding_model, model_dimension(config.embedding_model))
    store.ensure_collection()
    return store


def open_services(config: RagConfig) -> RagServices:
    """Blocks, then the ledger (cheap, most likely misconfigured); the vector store opens on first use.
    Each fails with one line."""
    config = resolve_blocks(config)
    db = Database(config.resolved_ledger_url)
    return RagServices(config=config, db=db, ledger=RagLedger(db))
