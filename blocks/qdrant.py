"""Qdrant connection settings as a Prefect block (production: the server on starlord)."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class QdrantConnection(Block):
    """Where the RAG vectors live: a Qdrant server URL, its API key and the collection alias readers query.

    Flows take the block's name (``qdrant_block`` of the RAG config, of backup and of restore, or
    ``SWARM_QDRANT_BLOCK`` on a node); without one they use ``qdrant_url`` or the embedded Qdrant.

    Example:
        ```python
        from blocks.qdrant import QdrantConnection

        qdrant = QdrantConnection.load("BLOCK_NAME")
        print(qdrant.url, qdrant.collection)
        ```
    """

    _block_type_name = "Swarm Qdrant Connection"
    _documentation_url = "https://qdrant.tech/documentation/guides/security/"  # type: ignore[assignment]

    url: str = Field(description="Qdrant HTTP URL, e.g. http://starlord:6333.")
    api_key: SecretStr | None = Field(default=None, description="API key of the server (hidden in the UI and logs).")
    collection: str = Field(
        default="documents", pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Alias that readers query."
    )

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None
