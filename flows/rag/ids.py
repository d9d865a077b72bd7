"""Deterministic identities: Qdrant point ids and model-specific collection names."""

from __future__ import annotations

import re
import uuid

# Fixed namespace so the same (source, document, chunk) maps to the same point id on every node, forever.
POINT_NAMESPACE = uuid.UUID("6f1f9a52-3c1e-5b8e-9d43-2a7c0d4b9e11")


def point_id(source_id: str, doc_id: str, chunk_index: int) -> str:
    """UUIDv5 of (source, document, chunk index).

    The version is deliberately not part of it: a changed document's chunk *i* overwrites the old
    chunk *i* in place, so a reader never sees it doubled; surplus old chunks are deleted by filter.
    """
    return str(uuid.uuid5(POINT_NAMESPACE, f"{source_id}\x1f{doc_id}\x1f{chunk_index}"))


def model_slug(model: str) -> str:
    """A short, collection-safe name for an embedding model (a name or a local path)."""
    tail = model.rstrip("/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9]+", "-", tail).strip("-") or "model"


def collection_name(alias: str, model: str, dim: int) -> str:
    """The physical collection behind ``alias`` for one model: a model change means a new collection."""
    return f"{alias}__{model_slug(model)}__{dim}"
