"""The embedding model's transformer as one callable, ``encoder(ids, mask) -> last hidden states``.

A BERT folder (the default model, and most sentence-transformers models: MiniLM, BGE, E5, GTE) runs here in plain
torch: token, position and type embeddings, then self-attention layers, read from the folder's config.json and
safetensors weights. Importing transformers' BertModel costs ~2 s of a process's start, more than a whole
``swarm search`` should take, while the weights load in milliseconds. Any other folder (another architecture,
relative positions, an activation this module does not know, weights in a pickle) is loaded through transformers'
AutoModel: same interface, same vectors. tests/flows/test_embed.py checks both against sentence-transformers'
``encode()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from flows.rag.embed_plan import EncoderShape

# Hugging Face's activation names for the two GELUs: exact (erf) and the tanh approximation.
_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
_WEIGHTS = "model.safetensors"


class _Layer(nn.Module):
    def __init__(self, shape: EncoderShape, eps: float, approximate: str) -> None:
        super().__init__()
        hidden = shape.hidden_size
        self.heads = shape.num_attention_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)  # query, key and value in one matrix product
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, shape.intermediate_size)
        self.output = nn.Linear(shape.intermediate_size, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)
        self.approximate = approximate

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        batch, width, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, width, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        attended = functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        x = self.attention_norm(x + self.attention_out(attended.transpose(1, 2).reshape(batch, width, hidden)))
        return self.output_norm(x + self.output(functional.gelu(self.intermediate(x), approximate=self.approximate)))


class BertEncoder(nn.Module):
    """BERT's embeddings and encoder layers; no pooler (the embed stage pools the token vectors itself)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.shape = EncoderShape.of(config)
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config.get("type_vocab_size", 2), hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=eps)
        approximate = _ACTIVATIONS[config.get("hidden_act", "gelu")]
        self.layers = nn.ModuleList(_Layer(self.shape, eps, approximate) for _ in range(config["num_hidden_layers"]))

    @property
    def dtype(self) -> torch.dtype:
        return self.word.weight.dtype

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Every chunk is one segment (token type 0), as sentence-transformers encodes it.
        x = self.word(ids) + self.position.weight[: ids.shape[1]] + self.token_type.weight[0]
        x = self.embed_norm(x)
        keep = mask.bool()[:, None, None, :]  # padding is never attended to
        for layer in self.layers:
            x = layer(x, keep)
        return x


# Hugging Face's parameter names inside encoder.layer.<i>, and this module's.
_LAYER_NAMES = {
    "attention.output.dense": "attention_out",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}
_EMBEDDING_NAMES = {
    "embeddings.word_embeddings": "word",
    "embeddings.position_embeddings": "position",
    "embeddings.token_type_embeddings": "token_type",
    "embeddings.LayerNorm": "embed_norm",
}
_QKV = ("query", "key", "value")


def _renamed(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face BERT state dict in this module's names; the pooler and buffers are dropped."""
    weights = {name.removeprefix("bert."): tensor for name, tensor in weights.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in weights.items():
        module, _, kind = name.rpartition(".")
        if module in _EMBEDDING_NAMES:
            out[f"{_EMBEDDING_NAMES[module]}.{kind}"] = tensor
        elif module.startswith("encoder.layer."):
            index, _, rest = module.removeprefix("encoder.layer.").partition(".")
            if rest.startswith("attention.self."):
                qkv.setdefault((index, kind), {})[rest.removeprefix("attention.self.")] = tensor
            elif rest in _LAYER_NAMES:
                out[f"layers.{index}.{_LAYER_NAMES[rest]}.{kind}"] = tensor
    for (index, kind), parts in qkv.items():
        out[f"layers.{index}.qkv.{kind}"] = torch.cat([parts[p] for p in _QKV])
    return out


def _runs_here(config: dict[str, Any], folder: Path) -> bool:
    return (
        config.get("model_type") == "bert"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and config.get("hidden_act", "gelu") in _ACTIVATIONS
        and (folder / _WEIGHTS).is_file()
    )


class _AutoModelEncoder(nn.Module):
    """transformers' AutoModel behind the same interface."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.shape = EncoderShape.of(model.config.to_dict())

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state


def load_encoder(folder: Path, dtype: torch.dtype) -> nn.Module:
    """The transformer in ``folder`` (config.json and weights), in ``dtype``, in eval mode on the CPU."""
    config = json.loads((folder / "config.json").read_text())
    if _runs_here(config, folder):
        from safetensors.torch import load_file

        encoder = BertEncoder(config)
        try:
            encoder.load_state_dict(_renamed(load_file(str(folder / _WEIGHTS))), strict=True)
        except (KeyError, RuntimeError):  # weights of another shape or naming than BertModel's: transformers knows them
            pass
        else:
            return encoder.to(dtype).eval()
    import transformers

    transformers.logging.disable_progress_bar()
    return _AutoModelEncoder(transformers.AutoModel.from_pretrained(str(folder), dtype=dtype)).eval()
