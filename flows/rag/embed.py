"""The embed stage: pre-tokenized chunks → normalized vectors, one model per process.

Tokenization happens in the parser processes (parse.py), so this stage only pads, copies and runs the
forward pass: the GPU is not left waiting on a single Python thread that tokenizes. Batches are sorted
by length to keep padding small, and bounded by padded tokens as well as by chunks, so that they fit the GPU's
free memory; a pass that runs out of it is retried in halves (flows/rag/embed_plan.py). The model runs in fp16
on CUDA; on a CPU with native bf16 (AVX-512 BF16 or AMX) in bf16 if a timed forward pass shows it faster than
fp32 (it is not on every such CPU; timed once per machine and model, flows/rag/precision_memory.py), else fp32;
the vectors it returns are fp32.

The model is a sentence-transformers folder, run here as its parts (the transformer, flows/rag/encoder.py; its
pooling; unit length) rather than through sentence-transformers itself, whose import alone costs ~200 MB
per process (it pulls scikit-learn and pandas; bench/bench_memory.py). tests/flows/test_embed.py checks
the vectors against sentence-transformers' ``encode()``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from flows.common.blocks import data_dir
from flows.common.errors import ConfigError, SwarmError
from flows.rag.config import Precision, RagConfig
from flows.rag.embed_plan import (
    DEFAULT_BATCH_TOKENS,
    EncoderShape,
    activation_bytes_per_token,
    gpu_token_budget,
    is_out_of_memory,
    mib,
    padded_width,
    run_batches,
)
from flows.rag.model_files import load_tokenizer, model_dimension, model_layout, offline_hub
from flows.rag.precision_memory import FILE_NAME, cpu_name, machine_key, recalled_speedup, remember_speedup

log = logging.getLogger(__name__)

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
                candidate(ids, mask)
                if round_number:  # the first round builds and caches the kernels
                    best[name] = min(best[name], time.perf_counter() - started)
    return best["fp32"] / best["bf16"]


class GpuNeed(NamedTuple):
    """What the model asks of a GPU at the precision it runs in there: its weights, one padded token's activations
    (activation_bytes_per_token) and its token window."""

    weights: int
    per_token: int
    window: int

    def budget(self, free: int) -> int:
        """Padded tokens per forward pass that ``free`` bytes allow; a ConfigError when not even one chunk fits."""
        return gpu_token_budget(free, self.weights, self.per_token, self.window)


def gpu_need(shape: EncoderShape, weight_bytes: int, element_bytes: int, window: int) -> GpuNeed:
    per_token = activation_bytes_per_token(
        shape.hidden_size, shape.intermediate_size, shape.num_attention_heads, window, element_bytes
    )
    return GpuNeed(weight_bytes, per_token, window)


_ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def gpu_need_of(model: str, precision: Precision) -> GpuNeed:
    """The model's need on CUDA read from its files (config.json, the safetensors headers), without torch or the
    GPU: what a preflight judges the card's free memory by while the gpu slot's holder keeps the card."""
    transformer = model_layout(model).transformer_dir
    parameters = 0
    for weights in sorted(transformer.glob("*.safetensors")):
        with weights.open("rb") as file:  # an 8-byte little-endian length, then a JSON header of every tensor
            header = json.loads(file.read(int.from_bytes(file.read(8), "little")))
        parameters += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    element = _ELEMENT_BYTES[choose_precision("cuda", precision, None)]
    shape = EncoderShape.of(json.loads((transformer / "config.json").read_text()))
    return gpu_need(shape, parameters * element, element, load_tokenizer(model)[1])


class Embedded(NamedTuple):
    vectors: np.ndarray  # one unit-length row per input; zeros for the failed ones
    failed: tuple[int, ...]  # inputs that did not fit in the GPU's memory even alone


def too_large_reason(tokens: int) -> str:
    return f"a chunk of {tokens} tokens ran out of GPU memory even alone in its forward pass (CUDA out of memory)"


class Embedder:
    # Batches are padded to a multiple of this many tokens: oneDNN generates and caches its bf16 kernels per input
    # shape, so a width per token count made the first thousand chunks several times slower and the process
    # hundreds of MB larger; 32 widths cost a few % of padding instead (bench_memory.py shows both).
    width_step = 8

    def __init__(self, model: str, device: str = "auto", precision: Precision = "auto") -> None:
        offline_hub()
        import torch

        from flows.rag.encoder import load_encoder

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
        self.model = load_encoder(layout.transformer_dir, getattr(torch, self.precision))
        # Padded tokens per pass that the GPU's free memory allows (None on a CPU: the settings bound it alone);
        # lowered if a pass runs out of memory anyway.
        self.memory_tokens = self._gpu_budget() if self.device == "cuda" else None
        self.model.to(self.device).eval()
        self.bf16_speedup: float | None = None  # measured only where auto may pick bf16 on a CPU
        if self.device == "cpu" and precision == "auto" and cpu_has_native_bf16():
            self.bf16_speedup = self._bf16_speedup(layout.transformer_dir / "config.json")
            self.precision = choose_precision(self.device, precision, self.bf16_speedup)
            self.model.to(getattr(torch, self.precision))
        self.cpu_threads = torch.get_num_threads()  # torch's default: one per core
        self.dim = model_dimension(model)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def _bf16_speedup(self, model_config: Path) -> float:
        """Timed on this machine's first load of the model, then recalled (flows/rag/precision_memory.py)."""
        memory = data_dir() / FILE_NAME
        key = machine_key(cpu_name(), self._torch.get_num_threads(), self._torch.__version__, model_config)
        speedup = recalled_speedup(memory, key)
        if speedup is None:
            speedup = measure_bf16_speedup(self.model, self.window)
            remember_speedup(memory, key, speedup)
        return speedup

    def _gpu_budget(self) -> int:
        """From the GPU's free memory before the weights are copied there (a ConfigError if they and one chunk
        cannot fit); logged once per process, as the model is loaded once."""
        torch = self._torch
        free, total = torch.cuda.mem_get_info()
        weights = sum(t.numel() * t.element_size() for t in [*self.model.parameters(), *self.model.buffers()])
        need = gpu_need(self.model.shape, weights, self.model.dtype.itemsize, self.window)
        budget = need.budget(free)
        log.info(
            "%s: %d of %d MiB free at load, %d MiB of weights, ~%d KiB per padded token: forward passes of at most"
            " %d padded tokens (and embed_batch_tokens, default %d)",
            torch.cuda.get_device_name(),
            mib(free),
            mib(total),
            mib(weights),
            need.per_token // 1024,
            budget,
            DEFAULT_BATCH_TOKENS,
        )
        return budget

    def embed_chunks(
        self,
        token_ids: Sequence[Sequence[int]],
        batch_size: int | None = None,
        cpu_threads: int | None = None,
        batch_tokens: int | None = None,
    ) -> Embedded:
        """Unit-length float32 vectors, in input order, in forward passes of at most ``batch_size`` chunks and
        ``batch_tokens`` padded tokens (flows/rag/embed_plan.py; the GPU's own budget from load, if lower). A pass
        that runs out of GPU memory is retried in halves; a chunk that does not fit even alone is listed in
        ``failed`` (its vector stays zero). ``cpu_threads``: torch's threads for this call on a CPU (restored
        after it); unset, all of them."""
        torch = self._torch
        count = len(token_ids)
        vectors = np.zeros((count, self.dim), dtype=np.float32)
        if count == 0:
            return Embedded(vectors, ())
        order = sorted(range(count), key=lambda i: len(token_ids[i]))
        widths = [padded_width(len(token_ids[i]), self.window, self.width_step) for i in order]
        budget = batch_tokens or DEFAULT_BATCH_TOKENS
        if self.memory_tokens is not None:
            budget = min(budget, self.memory_tokens)
        with self._threads(cpu_threads), torch.inference_mode():
            run = run_batches(
                widths,
                batch_size or DEFAULT_BATCH_SIZE[self.device],
                budget,
                lambda rows: self._forward([token_ids[order[p]] for p in rows], widths[rows[-1]]),
                is_out_of_memory,
                self._release_cached_memory,
            )
            if run.results:
                stacked = torch.cat([piece for _, piece in run.results]).cpu().numpy()
                vectors[np.asarray([order[p] for rows, _ in run.results for p in rows])] = stacked
        if run.budget < budget:  # the card has less room than at load: later calls start from what worked
            self.memory_tokens = run.budget
            log.warning("GPU out of memory: forward passes now take at most %d padded tokens", run.budget)
        return Embedded(vectors, tuple(sorted(order[p] for p in run.failed)))

    def embed_token_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        batch_size: int | None = None,
        cpu_threads: int | None = None,
        batch_tokens: int | None = None,
    ) -> np.ndarray:
        """``embed_chunks``' vectors, for callers that need all of them: a chunk that does not fit is an error."""
        embedded = self.embed_chunks(token_ids, batch_size, cpu_threads, batch_tokens)
        if embedded.failed:
            raise SwarmError(too_large_reason(len(token_ids[embedded.failed[0]])))
        return embedded.vectors

    def _forward(self, rows: Sequence[Sequence[int]], width: int) -> Any:
        """One forward pass: ``rows`` padded (or cut) to ``width``, pooled and normalized, left on the device."""
        torch = self._torch
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            seq = row[:width]
            ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
        # CUDA launches are asynchronous: preparing the next batch overlaps this forward pass.
        vectors = self._pool(
            torch.from_numpy(ids).to(self.device, non_blocking=True),
            torch.from_numpy(mask).to(self.device, non_blocking=True),
        )
        return torch.nn.functional.normalize(vectors.float(), dim=-1)

    def _release_cached_memory(self) -> None:
        """After an out-of-memory pass: hand the allocator's cached blocks back, so that the retry (and any other
        process on the card) finds them free."""
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

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
        tokens = self.model(ids, mask)
        if self.pooling == "cls":
            return tokens[:, 0]
        # Mean over real tokens: a batched matmul (fp32 accumulation on GPUs) instead of a masked copy.
        weights = mask.to(tokens.dtype).unsqueeze(1)
        sums = self._torch.bmm(weights, tokens).squeeze(1).float()
        return sums / mask.sum(dim=1, keepdim=True).clamp(min=1)

    def embed_texts(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        cpu_threads: int | None = None,
        batch_tokens: int | None = None,
    ) -> np.ndarray:
        """For queries and benchmarks: tokenize here (truncating at the window), then embed."""
        encodings = self.tokenizer.encode_batch(list(texts))
        # Over-long text keeps its closing special token, as the model saw it in training.
        ids = [e.ids if len(e.ids) <= self.window else [*e.ids[: self.window - 1], e.ids[-1]] for e in encodings]
        return self.embed_token_ids(ids, batch_size, cpu_threads, batch_tokens)


@lru_cache(maxsize=2)
def get_embedder(model: str, device: str = "auto", precision: Precision = "auto") -> Embedder:
    """Loaded once per process and reused by every batch and flow run in it."""
    return Embedder(model, device, precision)


def embed_queries(config: RagConfig, texts: Sequence[str]) -> np.ndarray:
    """Vectors for search queries (``swarm search``, research's local context). With ``device`` auto they are
    embedded on the CPU, holding no GPU slot: a few queries take milliseconds there, while on the GPU this process
    would keep a CUDA context and the model (~0.5 GB) on the card whose free memory the node's indexing sized its
    batches from, and would wait behind an hour-long batch for the slot. With ``device`` cuda they run on the GPU
    and hold the node's slot (``gpu_slot``) meanwhile."""
    device = "cpu" if config.device == "auto" else config.device
    slot = config.gpu_slot if device == "cuda" else None
    if slot:
        from flows.common.gpu import gpu_section  # Prefect: imported only where a slot is held

        guard: AbstractContextManager[None] = gpu_section(slot)
    else:
        guard = nullcontext()
    with guard:
        return get_embedder(config.embedding_model, device, config.embed_precision).embed_texts(texts)
