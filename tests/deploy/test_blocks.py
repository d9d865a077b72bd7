"""Every block: Prefect's standard block checks, a save/load round trip through the API, and secrets that
never show in repr, str or logs."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

import blocks
from blocks import (
    GoogleDriveCredentials,
    NodeSettings,
    OpenAICompatibleEndpoint,
    PostgresLedger,
    QdrantConnection,
    RedisServer,
    SearxngServer,
)

SECRET = "s3cr3t-value-that-must-not-leak"

# One valid instance per block, with every secret field set to SECRET.
EXAMPLES: dict[type[Block], dict[str, Any]] = {
    GoogleDriveCredentials: {"service_account_info": {"private_key": SECRET, "client_email": "sa@x.iam"}},
    QdrantConnection: {"url": "http://starlord:6333", "api_key": SECRET, "collection": "documents"},
    PostgresLedger: {"url": "postgresql://swarm@oracle:5432/swarm", "password": SECRET},
    OpenAICompatibleEndpoint: {"base_url": "http://oracle:4000/v1", "api_key": SECRET, "chat_model": "default"},
    SearxngServer: {"url": "http://thanos:8080"},
    RedisServer: {"url": "redis://oracle:6379/0", "password": SECRET},
    NodeSettings: {"node": "thanos", "gpu_slot": "gpu:thanos", "cuda_visible_devices": "0"},
}


def test_the_package_exports_every_block_and_each_has_an_example() -> None:
    exported = {getattr(blocks, name) for name in blocks.__all__}
    assert exported == set(EXAMPLES)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_round_trip_through_the_api_keeps_values_and_hides_secrets(
    cls: type[Block], caplog: pytest.LogCaptureFixture
) -> None:
    block = cls(**EXAMPLES[cls])
    name = f"test-{cls.get_block_type_slug()}"
    block.save(name, overwrite=True)
    loaded = cls.load(name)
    assert loaded.model_dump(mode="python") == block.model_dump(mode="python")
    secrets = [v for v in loaded.model_dump(mode="json").values() if isinstance(v, str) and "*" in v]
    with caplog.at_level(logging.INFO):
        logging.getLogger("swarm.test").info("loaded block %s / %r", loaded, loaded)
    for text in (repr(loaded), str(loaded), caplog.text):
        assert SECRET not in text
    if any(SECRET in str(v) for v in EXAMPLES[cls].values()):
        assert secrets, "a secret field should dump as a mask"


def test_secret_values_are_still_usable_where_needed() -> None:
    ledger = PostgresLedger(url="postgresql://swarm@oracle:5432/swarm", password="p@ss/word")
    assert ledger.connection_url() == "postgresql://swarm:p%40ss%2Fword@oracle:5432/swarm"
    assert PostgresLedger(url="postgresql://swarm@oracle/swarm").connection_url() == "postgresql://swarm@oracle/swarm"
    with pytest.raises(ValueError, match="password field"):
        PostgresLedger(url="postgresql://swarm:oops@oracle/swarm")
    assert QdrantConnection(url="http://q:6333", api_key="k").api_key_value() == "k"
    env = NodeSettings(node="thanos", gpu_slot="gpu:thanos", cuda_visible_devices="0").env()
    assert env["SWARM_GPU_SLOT"] == "gpu:thanos" and env["CUDA_VISIBLE_DEVICES"] == "0"
    assert NodeSettings(node="oracle").env() == {"SWARM_NODE": "oracle"}  # unset: the worker's env decides
    starlord = NodeSettings(node="starlord", parse_workers=0, extra_env={"VLLM_WORKER_MULTIPROC_METHOD": "spawn"})
    assert starlord.env() == {
        "SWARM_NODE": "starlord",
        "SWARM_PARSE_WORKERS": "0",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    }
    for base_url in ("http://oracle:4000/v1", "http://oracle:4000/v1/", "http://oracle:4000"):
        assert OpenAICompatibleEndpoint(base_url=base_url).server_url() == "http://oracle:4000"


class _Standard(BlockStandardTestSuite):
    def test_has_a_valid_image(self, block: type[Block]) -> None:  # type: ignore[override]
        pytest.skip("downloads the logo over the network; tests stay on 127.0.0.1")


class TestQdrantConnection(_Standard):
    @pytest.fixture
    def block(self) -> type[Block]:
        return QdrantConnection


class TestPostgresLedger(_Standard):
    @pytest.fixture
    def block(self) -> type[Block]:
        return PostgresLedger


class TestOpenAICompatibleEndpoint(_Standard):
    @pytest.fixture
    def block(self) -> type[Block]:
        return OpenAICompatibleEndpoint


class TestSearxngServer(_Standard):
    @pytest.fixture
    def block(self) -> type[Block]:
        return SearxngServer


class TestRedisServer(_Standard):
    @pytest.fixture
    def block(self) -> type[Block]:
        return RedisServer


class TestNodeSettings(_Standard):
    @pytest.fixture
    def block(self) -> type[Block]:
        return NodeSettings


class TestGoogleDriveCredentials(_Standard):
    @pytest.fixture
    def block(self) -> type[Block]:
        return GoogleDriveCredentials


def test_a_flow_finds_its_ledger_parameters_first_then_the_node_settings_then_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from flows.common.blocks import resolve_ledger_url
    from flows.common.errors import ConfigError

    PostgresLedger(url="postgresql://swarm@oracle:5432/param", password="pw").save("ledger-param", overwrite=True)
    PostgresLedger(url="postgresql://swarm@oracle:5432/node").save("ledger-node", overwrite=True)
    monkeypatch.setenv("SWARM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SWARM_LEDGER_BLOCK", raising=False)
    monkeypatch.delenv("SWARM_LEDGER_URL", raising=False)
    assert resolve_ledger_url(None, None) == f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("SWARM_LEDGER_URL", "postgresql://postgres@127.0.0.1/env")
    assert resolve_ledger_url(None, None) == "postgresql://postgres@127.0.0.1/env"
    monkeypatch.setenv("SWARM_LEDGER_BLOCK", "ledger-node")
    assert resolve_ledger_url(None, None) == "postgresql://swarm@oracle:5432/node"
    assert resolve_ledger_url(None, "sqlite:///given.db") == "sqlite:///given.db"
    assert resolve_ledger_url("ledger-param", "sqlite:///given.db") == "postgresql://swarm:pw@oracle:5432/param"
    monkeypatch.setenv("SWARM_LEDGER_BLOCK", "no-such-ledger")
    with pytest.raises(ConfigError, match="SWARM_LEDGER_BLOCK: no PostgresLedger block named 'no-such-ledger'"):
        resolve_ledger_url(None, None)


def test_a_block_parameter_is_offered_by_type_and_arrives_as_the_block_without_its_secret_in_the_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the UI does with rag-sync's config.ledger_block: the schema names the block type (the form offers the
    saved blocks), the UI sends a $ref, and the flow gets the loaded block; a name still works."""
    import json

    from prefect.utilities.callables import parameter_schema

    from flows.common.blocks import resolve_block, resolve_qdrant
    from flows.common.errors import ConfigError
    from flows.rag.sync import rag_sync

    schema = parameter_schema(rag_sync).model_dump_for_openapi()
    definitions = schema["definitions"]
    ledger_field = definitions["RagOptions"]["properties"]["ledger_block"]
    assert {"$ref": "#/definitions/PostgresLedger"} in ledger_field["anyOf"] and ledger_field["description"]
    assert definitions["PostgresLedger"]["block_type_slug"] == PostgresLedger.get_block_type_slug()
    assert definitions["QdrantConnection"]["secret_fields"] == ["api_key"]

    block_id = PostgresLedger(url="postgresql://swarm@oracle/swarm", password=SECRET).save("ui-ledger", overwrite=True)
    sent = {
        "source": {"kind": "local", "path": "/d"},
        "config": {"ledger_block": {"$ref": {"block_document_id": str(block_id)}}},
    }
    assert SECRET not in json.dumps(sent)  # what the run's stored parameters hold
    received = rag_sync.validate_parameters(sent)["config"].ledger_block
    assert isinstance(received, PostgresLedger) and SECRET in received.connection_url()
    assert resolve_block(PostgresLedger, received, "ledger_block") is received
    assert resolve_block(PostgresLedger, "ui-ledger", "ledger_block").connection_url() == received.connection_url()
    with pytest.raises(ConfigError, match="ledger_block: a QdrantConnection is not a PostgresLedger block"):
        resolve_block(PostgresLedger, QdrantConnection(url="http://q:6333"), "ledger_block")

    # The Qdrant key has one name; its former one works for a release, with a warning.
    monkeypatch.delenv("SWARM_QDRANT_API_KEY", raising=False)
    monkeypatch.delenv("SWARM_QDRANT_BLOCK", raising=False)
    monkeypatch.setenv("QDRANT_API_KEY", "old-name")
    assert resolve_qdrant(None, "http://q:6333", None).api_key == "old-name"
    monkeypatch.setenv("SWARM_QDRANT_API_KEY", "new-name")
    assert resolve_qdrant(None, "http://q:6333", None).api_key == "new-name"
