"""What one RAG run works with (ledger, vector store, source), opened once and shared by its tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flows.common.blocks import QdrantTarget, resolve_ledger_url, resolve_qdrant
from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.rag.config import RagConfig
from flows.rag.indexable import limit_bytes
from flows.rag.ledger import RagLedger
from flows.rag.model_files import model_dimension
from flows.rag.sources.base import Source

if TYPE_CHECKING:
    from flows.rag.source_spec import SourceSpec
    from flows.rag.store import VectorStore


@dataclass(frozen=True)
class Connections:
    """Where a run's ledger and Qdrant are, after the one resolver (flows/common/blocks.py). ``ledger_url`` may
    hold a password: pass it on, never log it."""

    ledger_url: str
    qdrant: QdrantTarget
    qdrant_path: Path  # the embedded store's folder, when ``qdrant.url`` is None
    collection: str  # the alias readers query: the Qdrant block's, else the config's

    def __repr__(self) -> str:
        return f"Connections(qdrant={self.qdrant!r}, collection={self.collection!r})"


def resolve_connections(config: RagConfig) -> Connections:
    """The config's blocks, URLs and paths in the order of every flow; a URL from the node's environment may
    hold a password, one given to the run may not (load_config refused it)."""
    explicit_ledger_url = config.ledger_url if "ledger_url" in config.explicit else None  # else read from the node
    ledger_url = resolve_ledger_url(config.ledger_block, explicit_ledger_url, config.data_dir)
    qdrant = resolve_qdrant(config.qdrant_block, config.qdrant_url, str(config.qdrant_path or "") or None)
    path = Path(qdrant.path) if qdrant.path else config.resolved_qdrant_path
    return Connections(ledger_url, qdrant, path, qdrant.collection or config.collection)


@dataclass
class RagResources:
    """A run's config, connections, ledger and (opened on first use) vector store; one per run."""

    config: RagConfig
    connections: Connections
    db: Database
    ledger: RagLedger
    _store: VectorStore | None = field(default=None, repr=False)
    _served: VectorStore | None = field(default=None, repr=False)
    _sources: dict[str, Source] = field(default_factory=dict, repr=False)

    @property
    def collection(self) -> str:
        return self.connections.collection

    @property
    def store(self) -> VectorStore:
        """Opened on first use: a dispatching rag-sync never opens it (the embedded store admits one process), nor does
        a sync with nothing to do."""
        if self._store is None:
            self._store = open_store(self.connections, self.config.embedding_model)
        return self._store

    def served_store(self) -> VectorStore | None:
        """During a model migration, the collection the alias still serves (None when the run writes that one,
        or nothing is served yet). Removals and payload changes must reach it too: else, for the days a 60 TB
        migration takes, readers would see deleted documents and readers whose access was revoked."""
        served = self.ledger.published_model(self.collection)
        if served is None or served == self.config.embedding_model:
            return None
        if self._served is None or self._served.model != served:
            self._served = open_store(self.connections, served)
        return self._served

    def use_model(self, model: str) -> None:
        """Set the run's one embedding model explicitly (so it travels in every batch's options); the store,
        which is per model, must not be open yet."""
        assert self._store is None, "the model is decided before the store opens"
        self.config = self.config.with_explicit(embedding_model=model)

    def use_served_model(self) -> str:
        """For a reader: embed queries with the model the alias serves (the ledger's record), not this node's
        setting, which may name another model (another node's, or a migration's target): its vectors would be
        compared with another model's. A model the run names explicitly must be the served one."""
        served = self.ledger.published_model(self.collection)
        if served is None or served == self.config.embedding_model:
            return self.config.embedding_model
        if "embedding_model" in self.config.explicit:
            raise ConfigError(
                f"{self.collection} serves {served}, not {self.config.embedding_model}: search without a model,"
                f" or with {served}"
            )
        self.use_model(served)
        return served

    def source(self, spec: SourceSpec) -> Source:
        """The source of ``spec``, built once per run (a Drive source holds its client and credentials)."""
        key = spec.model_dump_json()
        if key not in self._sources:
            # Every source applies the one size limit while listing (flows/rag/indexable.py).
            self._sources[key] = spec.build(self.db, limit_bytes(self.config.max_file_mb))
        return self._sources[key]


def open_store(connections: Connections, model: str) -> VectorStore:
    from flows.rag.store import open_vector_store  # an engine takes up to 0.7 s to import; not every run needs it

    target = connections.qdrant
    return open_vector_store(
        target.url, target.api_key, connections.qdrant_path, connections.collection, model, model_dimension(model)
    )


def open_resources(config: RagConfig) -> RagResources:
    """Blocks, then the ledger (cheap, most likely misconfigured); the vector store opens on first use.
    Each fails with one line."""
    connections = resolve_connections(config)
    db = Database(connections.ledger_url)
    return RagResources(config=config, connections=connections, db=db, ledger=RagLedger(db))
