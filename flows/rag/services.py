"""Opening what the RAG flows work with (ledger, vector store, source) from one validated config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from flows.common.db import Database
from flows.rag.config import RagConfig
from flows.rag.ledger import RagLedger
from flows.rag.model_files import model_dimension
from flows.rag.sources.base import Source
from flows.rag.sources.gdrive import GoogleDriveSpec
from flows.rag.sources.local import LocalFolderSpec
from flows.rag.store import VectorStore, open_qdrant

# Every source's spec, discriminated by ``kind``; the Prefect UI renders it as a form with one branch per source.
SourceSpec = Annotated[LocalFolderSpec | GoogleDriveSpec, Field(discriminator="kind")]


@dataclass
class RagServices:
    config: RagConfig
    db: Database
    ledger: RagLedger
    store: VectorStore

    def source(self, spec: SourceSpec) -> Source:
        return spec.build(self.db)


def open_services(config: RagConfig) -> RagServices:
    """Ledger first (cheap, most likely misconfigured), then the vector store; each fails with one line."""
    db = Database(config.resolved_ledger_url)
    ledger = RagLedger(db)
    api_key = config.qdrant_api_key.get_secret_value() if config.qdrant_api_key else None
    client = open_qdrant(config.qdrant_url, api_key, config.resolved_qdrant_path)
    store = VectorStore(client, config.collection, config.embedding_model, model_dimension(config.embedding_model))
    store.ensure_collection()
    return RagServices(config=config, db=db, ledger=ledger, store=store)
