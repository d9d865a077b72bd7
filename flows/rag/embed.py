"""The embed stage: pre-tokenized chunks → normalized vectors, one model per process.

Tokenization happens in the parser processes (parse.py), so this stage only pads, copies and runs the
forward pass: the GPU is not left waiting on a single Python thread that tokenizes. Batches are sorted
by length to keep padding small, and on CUDA the model runs in fp16 with results copied back once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from flows.common.errors import ConfigError
from flows.rag.model_files import load_tokenizer, offline_hub, resolve_model_dir

# Chunks per forward pass when the config sets none, as measured (docs/benchmarks.md): a CPU is fastest with small
# batches (less padding, activations stay in cache; 29 chunks/s at 8 against 19 at 64, and ~200 MB less peak);
# a GPU needs large ones to stay busy (bench_embed_gpu.py's stage runs at 512).
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 512}


class Embedder:
    def __init__(self, model: str, device: str = "auto") -> None:
        offline_hub()
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()

        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available")
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self.model_name = model
        self._torch = torch
        self.model = SentenceTransformer(str(resolve_model_dir(model)), device=self.device, local_files_only=True)
        # fp16 on the GPU; fp32 on a CPU, where half precision is many times slower (a folder may hold fp16).
        if self.device == "cuda":
            self.model.half()
        else:
            self.model.float()
        self.model.eval()
        self.dim = int(self.model.get_embedding_dimension())
        self.tokenizer, self.window = load_tokenizer(model)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def embed_token_ids(self, token_ids: Sequence[Sequence[int]], batch_size: int | None = None) -> np.ndarray:
        """Unit-length float32 vectors, in input order."""
        torch = self._torch
        batch_size = batch_size or DEFAULT_BATCH_SIZE[self.device]
        count = len(token_ids)
        if count == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        order = sorted(range(count), key=lambda i: len(token_ids[i]))
        pieces = []
        with torch.inference_mode():
            for start in range(0, count, batch_size):
                rows = order[start : start + batch_size]
                width = min(self.window, max(len(token_ids[i]) for i in rows))
                ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, i in enumerate(rows):
                    seq = token_ids[i][:width]
                    ids[r, : len(seq)] = seq
                    mask[r, : len(seq)] = 1
                features = {
                    "input_ids": torch.from_numpy(ids).to(self.device, non_blocking=True),
                    "attention_mask": torch.from_numpy(mask).to(self.device, non_blocking=True),
                    "token_type_ids": torch.zeros_like(torch.from_numpy(ids)).to(self.device, non_blocking=True),
                }
                # CUDA launches are asynchronous: preparing the next batch overlaps this forward pass.
                vectors = self.model.forward(features)["sentence_embedding"]
                pieces.append(torch.nn.functional.normalize(vectors.float(), dim=-1))
            stacked = torch.cat(pieces).cpu().numpy()
        result = np.empty_like(stacked)
        result[np.asarray(order)] = stacked
        return result

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """For queries and benchmarks: tokenize here (truncating at the window), then embed."""
        encodings = self.tokenizer.encode_batch(list(texts))
        # Over-long text keeps its closing special token, as the model saw it in training.
        ids = [e.ids if len(e.ids) <= self.window else [*e.ids[: self.window - 1], e.ids[-1]] for e in encodings]
        return self.embed_token_ids(ids, batch_size)


@lru_cache(maxsize=2)
def get_embedder(model: str, device: str = "auto") -> Embedder:
    """Loaded once per process and reused by every batch and flow run in it."""
    return Embedder(model, device)
