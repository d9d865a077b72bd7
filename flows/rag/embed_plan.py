"""How the embed stage cuts chunks into forward passes that fit the GPU, and how it backs off when one does not.

Pure logic for flows/rag/embed.py (no torch here), so the same sequence is tested on any machine.

A forward pass's memory grows with its *padded* tokens: rows × the widest row's width (every row is padded to
it), so batches are bounded by padded tokens as well as by rows. The bound is the smaller of the setting
(``embed_batch_tokens``, default ``DEFAULT_BATCH_TOKENS``) and what the GPU's free memory at load allows
(``gpu_token_budget``). Rows arrive sorted by length, so short chunks share large batches and long ones go in
small ones. A pass that still runs out of memory (another process took part of the card since the load) is
retried at half the budget, with the allocator's cache emptied in between, until a single row is left; a row
that does not fit even alone fails by itself, and the other rows keep their vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from flows.common.errors import ConfigError

T = TypeVar("T")

# Padded tokens per forward pass unless the config says otherwise; what a 10 GB card (an RTX 3080: ~9.5 GiB free
# once the CUDA context is up) holds with room to spare, by activation_bytes_per_token at fp16:
#   all-MiniLM-L6-v2 (384 wide, FFN 1536, 12 heads, 256-token window): 22.5 KiB a token -> 2.8 GiB;
#   a BERT-base shape (768, 3072, 12 heads) with a 512-token window:   45 KiB a token  -> 5.6 GiB (+0.2 GiB weights).
# It is 512 chunks of MiniLM's full window, the batch the GPU table in docs/benchmarks.md was measured at. A larger
# model is held lower by gpu_token_budget, from the free memory it finds at load.
DEFAULT_BATCH_TOKENS = 131_072

# Share of the free memory (after the weights) that a forward pass may plan to use: the rest is for the caching
# allocator's rounding and fragmentation, cuBLAS workspaces, the batch's inputs and the pooled vectors kept until
# the group is copied back.
GPU_MEMORY_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class EncoderShape:
    """What the memory estimate needs of a transformer, from its config.json (or a loaded model's config)."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> EncoderShape:
        hidden = config["hidden_size"]
        return cls(hidden, config.get("intermediate_size") or 4 * hidden, config["num_attention_heads"])


def activation_bytes_per_token(hidden: int, intermediate: int, heads: int, width: int, element_bytes: int) -> int:
    """A generous estimate of the memory one padded token costs inside an encoder layer's forward pass without
    gradients (a layer's activations are freed before the next one runs, so depth does not count): its input and
    output (2 × hidden), Q, K and V (3 × hidden), the attention's context (hidden), the attention scores and their
    softmax (2 × heads × width, where the attention kernel materializes them), and the FFN's inner activation
    before and after its nonlinearity (2 × intermediate). Counted as if all were alive at once."""
    return element_bytes * (6 * hidden + 2 * intermediate + 2 * heads * width)


def gpu_token_budget(free_bytes: int, weight_bytes: int, per_token_bytes: int, window: int) -> int:
    """Padded tokens per pass that the GPU's free memory at load (``free_bytes``, before the weights were copied
    there) allows; a ConfigError when the weights and one full-window row do not fit at all."""
    room = free_bytes - weight_bytes
    if room < per_token_bytes * window:
        raise ConfigError(
            f"the embedding model does not fit this GPU: it needs {mib(weight_bytes + per_token_bytes * window)} MiB"
            f" for its weights and one {window}-token chunk, and the GPU has {mib(free_bytes)} MiB free"
            " (another process holds the rest?); set device cpu or free the GPU"
        )
    return max(window, int(room * GPU_MEMORY_SHARE) // per_token_bytes)


def mib(size: int) -> int:
    return size // 2**20


def padded_width(length: int, window: int, step: int) -> int:
    """A row's width in its batch: its length rounded up to a multiple of ``step``, never past the window."""
    return min(window, -(-length // step) * step)


def batch_end(widths: Sequence[int], start: int, max_rows: int, max_tokens: int) -> int:
    """End of the batch that starts at ``start``: as many rows as ``max_rows`` and ``max_tokens`` padded tokens
    allow (``widths`` ascending, so the last row is the widest), and at least one."""
    end = start + 1
    while end < len(widths) and end - start < max_rows and (end + 1 - start) * widths[end] <= max_tokens:
        end += 1
    return end


@dataclass
class BatchRun(Generic[T]):
    """What ``run_batches`` did: each forward pass's rows and result, the padded tokens of every pass it tried
    (those that ran out of memory too), the rows that did not fit even alone, and the budget it ended with."""

    budget: int
    results: list[tuple[range, T]] = field(default_factory=list)
    tried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def run_batches(
    widths: Sequence[int],
    max_rows: int,
    max_tokens: int,
    forward: Callable[[range], T],
    out_of_memory: Callable[[BaseException], bool],
    release: Callable[[], None],
) -> BatchRun[T]:
    """Run ``forward`` on consecutive rows (positions in ``widths``, ascending) in batches bounded by ``max_rows``
    rows and ``max_tokens`` padded tokens. A batch that raises what ``out_of_memory`` recognizes is retried at half
    its padded tokens (``release`` in between, once the failed pass's tensors are gone), down to one row; a single
    row that runs out fails alone (``failed``) and the budget stays. Any other error propagates."""
    run: BatchRun[T] = BatchRun(max_tokens)
    start = 0
    while start < len(widths):
        end = batch_end(widths, start, max_rows, run.budget)
        padded = (end - start) * widths[end - 1]
        run.tried.append(padded)
        try:
            run.results.append((range(start, end), forward(range(start, end))))
            start = end
            continue
        except Exception as exc:
            if not out_of_memory(exc):
                raise
        # Outside the except block: the exception and its traceback, which hold the pass's tensors, are released.
        release()
        if end - start == 1:
            run.failed.append(start)
            start = end
        else:
            run.budget = max(1, padded // 2)
    return run


def is_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or a RuntimeError that says so ("CUDA error: out of memory" from a kernel's
    own allocation, cuBLAS failing to allocate its workspace)."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "cublas_status_alloc_failed" in message)
