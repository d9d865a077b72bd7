"""The embed stage: pre-tokenized chunks → normalized vectors, one model per process.

Tokenization happens in the parser processes (parse.py), so this stage only pads, copies and runs the
forward pass: the GPU is not left waiting on a single Python thread that tokenizes. Batches are sorted
by length to keep padding small. The model runs in fp16 on CUDA; on a CPU with native bf16
(AVX-512 BF16 or AMX) in bf16 if a timed forward pass at load shows it faster than fp32 (it is not on every
such CPU), else fp32; the vectors it returns are fp32.

The model is a sentence-transformers folder, run here as its parts (the Hugging Face transformer, its
pooling, unit length) rather than through sentence-transformers itself, whose import alone costs ~200 MB
per process (it pulls scikit-learn and pandas; bench/bench_memory.py). tests/flows/test_embed.py checks
the vectors against sentence-transformers' ``encode()``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

from flows.common.errors import ConfigError
from flows.rag.config import Precision
from flows.rag.model_files import load_tokenizer, model_dimension, model_layout, offline_hub

# Chunks per forward pass when the config sets none, as measured (docs/benchmarks.md): a CPU is fastest with small
# batches (less padding, activations stay in cache; 29 chunks/s at 8 against 19 at 64, and ~200 MB less peak);
# a GPU needs large ones to stay busy (bench_embed_gpu.py's stage runs at 512).
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 512}


# bf16 must beat fp32 by this much to be chosen: its vectors differ slightly (cosine ~0.9999), and load-time
# timings are noisy.
BF16_MIN_SPEEDUP = 1.15


def choose_precision(device: str, requested: Precision, bf16_speedup: float | None) -> str:
    """The dtype the forward pass runs in. auto: fp16 on CUDA; on a CPU, bf16 when it was measured faster than
    fp32 (``bf16_speedup``: fp32's time over bf16's, None where the CPU has no native bf16 and it would be
    emulated). Native is not enough: bench_stages.py gave 1.57x on an AMD EPYC and 0.65x on an Intel Xeon, both
    with AVX-512 BF16."""
    if requested == "auto":
        if device == "cuda":
            return "float16"
        return "bfloat16" if bf16_speedup is not None and bf16_speedup >= BF16_MIN_SPEEDUP else "float32"
    if requested == "float16" and device == "cpu":
        raise ConfigError("embed_precision float16 runs many times slower than float32 on a CPU: use auto or bfloat16")
    return requested


def forward_threads(cores: int, busy_parsers: int) -> int:
    """Torch threads for a CPU forward pass while ``busy_parsers`` parser processes work beside it: the cores they
    leave, at least one. Oversubscribed, torch's threads wait at every barrier for one the OS has preempted: 300
    python-doc pages on 2 cores took 161 s with 2 threads throughout and 148 s with this (docs/benchmarks.md)."""
    return max(1, cores - busy_parsers)


def cpu_has_native_bf16() -> bool:
    import torch

    # Private helpers, present since torch 2.1; a torch without them gets fp32, the safe choice.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def measure_bf16_speedup(model: Any, window: int, rounds: int = 3) -> float:
    """fp32 time over bf16 time of a forward pass of ``model`` (fp32) on a typical CPU batch; alternated and
    best-of so that load from other processes does not favour either. Takes about a second for MiniLM."""
    import torch

    ids = torch.randint(1000, 2000, (DEFAULT_BATCH_SIZE["cpu"], min(128, window)))
    mask = torch.ones_like(ids)
    half = copy.deepcopy(model).to(torch.bfloat16)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.inference_mode():
        for round_number in range(rounds + 1):
            for name, candidate in (("fp32", model), ("bf16", half)):
                started = time.perf_counter()
                candidate(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
                if round_number:  # the first round builds and caches the kernels
                    best[name] = min(best[name], time.perf_counter() - started)
    return best["fp32"] / best["bf16"]


class Embedder:
    # Batches are padded to a multiple of this many tokens: oneDNN generates and caches its bf16 kernels per input
    # shape, so a width per token count made the first thousand chunks several times slower and the process
    # hundreds of MB larger; 32 widths cost a few % of padding instead (bench_memory.py shows both).
    width_step = 8

    def __init__(self, model: str, device: str = "auto", precision: Precision = "auto") -> None:
        offline_hub()
        import torch
        import transformers

        transformers.logging.disable_progress_bar()

        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available")
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self.model_name = model
        self._torch = torch
        layout = model_layout(model)
        self.pooling = layout.pooling
        self.tokenizer, self.window = load_tokenizer(model)
        # Whatever the folder holds (it may be fp16): a CPU runs fp32 unless bf16 is asked for or measured faster.
        self.precision = choose_precision(self.device, precision, None)
        self.model = transformers.AutoModel.from_pretrained(
            str(layout.transformer_dir), dtype=getattr(torch, self.precision)
        )
        self.model.to(self.device).eval()
        self.bf16_speedup: float | None = None  # measured only where auto may pick bf16 on a CPU
        if self.device == "cpu" and precision == "auto" and cpu_has_native_bf16():
            self.bf16_speedup = measure_bf16_speedup(self.model, self.window)
            self.precision = choose_precision(self.device, precision, self.bf16_speedup)
            self.model.to(getattr(torch, self.precision))
        self.cpu_threads = torch.get_num_threads()  # torch's default: one per core
        self.dim = model_dimension(model)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def embed_token_ids(
        self, token_ids: Sequence[Sequence[int]], batch_size: int | None = None, cpu_threads: int | None = None
    ) -> np.ndarray:
        """Unit-length float32 vectors, in input order. ``cpu_threads``: torch's threads for this call on a CPU
        (restored after it); unset, all of them."""
        torch = self._torch
        batch_size = batch_size or DEFAULT_BATCH_SIZE[self.device]
        count = len(token_ids)
        if count == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        order = sorted(range(count), key=lambda i: len(token_ids[i]))
        pieces = []
        with self._threads(cpu_threads), torch.inference_mode():
            for start in range(0, count, batch_size):
                rows = order[start : start + batch_size]
                longest = max(len(token_ids[i]) for i in rows)
                width = min(self.window, -(-longest // self.width_step) * self.width_step)
                ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, i in enumerate(rows):
                    seq = token_ids[i][:width]
                    ids[r, : len(seq)] = seq
                    mask[r, : len(seq)] = 1
                # CUDA launches are asynchronous: preparing the next batch overlaps this forward pass.
                vectors = self._pool(
                    torch.from_numpy(ids).to(self.device, non_blocking=True),
                    torch.from_numpy(mask).to(self.device, non_blocking=True),
                )
                pieces.append(torch.nn.functional.normalize(vectors.float(), dim=-1))
            stacked = torch.cat(pieces).cpu().numpy()
        result = np.empty_like(stacked)
        result[np.asarray(order)] = stacked
        return result

    @contextmanager
    def _threads(self, cpu_threads: int | None) -> Iterator[None]:
        """torch's thread count for the block, restored after it; nothing to do on CUDA or when unset."""
        if self.device != "cpu" or cpu_threads is None:
            yield
            return
        previous = self._torch.get_num_threads()
        self._torch.set_num_threads(cpu_threads)
        try:
            yield
        finally:
            self._torch.set_num_threads(previous)

    def _pool(self, ids: Any, mask: Any) -> Any:
        hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=self._torch.zeros_like(ids))
        tokens = hidden.last_hidden_state
        if self.pooling == "cls":
            return tokens[:, 0]
        # Mean over real tokens: a batched matmul (fp32 accumulation on GPUs) instead of a masked copy.
        weights = mask.to(tokens.dtype).unsqueeze(1)
        sums = self._torch.bmm(weights, tokens).squeeze(1).float()
        return sums / mask.sum(dim=1, keepdim=True).clamp(min=1)

    def embed_texts(
        self, texts: Sequence[str], batch_size: int | None = None, cpu_threads: int | None = None
    ) -> np.ndarray:
        """For queries and benchmarks: tokenize here (truncating at the window), then embed."""
        encodings = self.tokenizer.encode_batch(list(texts))
        # Over-long text keeps its closing special token, as the model saw it in training.
        ids = [e.ids if len(e.ids) <= self.window else [*e.ids[: self.window - 1], e.ids[-1]] for e in encodings]
        return self.embed_token_ids(ids, batch_size, cpu_threads)


@lru_cache(maxsize=2)
def get_embedder(model: str, device: str = "auto", precision: Precision = "auto") -> Embedder:
    """Loaded once per process and reused by every batch and flow run in it."""
    return Embedder(model, device, precision)
