"""Forward passes bounded by padded tokens, and the halving after an out-of-memory pass (flows/rag/embed_plan.py),
with a fake forward that fails above a token count as a GPU would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flows.common.errors import ConfigError
from flows.rag.config import RagConfig, load_config
from flows.rag.embed_plan import (
    DEFAULT_BATCH_TOKENS,
    activation_bytes_per_token,
    batch_end,
    gpu_token_budget,
    is_out_of_memory,
    padded_width,
    run_batches,
)


class FakeOutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError (torch.OutOfMemoryError), without torch."""


FakeOutOfMemoryError.__name__ = "OutOfMemoryError"


class FakeGpu:
    """A forward that runs out of memory above ``capacity`` padded tokens, and counts the cache releases."""

    def __init__(self, widths: list[int], capacity: int) -> None:
        self.widths, self.capacity, self.released = widths, capacity, 0

    def forward(self, rows: range) -> list[int]:
        if len(rows) * self.widths[rows[-1]] > self.capacity:
            raise FakeOutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [row * 10 for row in rows]  # a stand-in for each row's vector

    def release(self) -> None:
        self.released += 1


def _run(widths: list[int], capacity: int, max_rows: int = 512, budget: int = 4096) -> Any:
    gpu = FakeGpu(widths, capacity)
    return run_batches(widths, max_rows, budget, gpu.forward, is_out_of_memory, gpu.release), gpu


def _vectors(run: Any) -> list[int]:
    return [vector for _, piece in run.results for vector in piece]


def test_batches_are_bounded_by_padded_tokens_as_well_as_by_rows() -> None:
    widths = [8, 8, 8, 8, 64, 64, 256]
    assert batch_end(widths, 0, 512, 32) == 4  # 4 x 8 = 32 tokens
    assert batch_end(widths, 0, 3, 4096) == 3  # the row count still bounds
    assert batch_end(widths, 0, 512, 128) == 4  # a fifth row would pad all five to 64: 320 tokens
    assert batch_end(widths, 4, 512, 128) == 6
    assert batch_end(widths, 6, 512, 128) == 7  # one row wider than the budget still goes, alone
    assert [padded_width(n, 256, 8) for n in (1, 8, 9, 250, 300)] == [8, 8, 16, 256, 256]


def test_an_out_of_memory_pass_is_retried_at_half_its_tokens_and_gives_the_unfailed_vectors() -> None:
    widths = [8] * 16 + [32] * 8
    unfailed, _ = _run(widths, capacity=10**9)
    run, gpu = _run(widths, capacity=40)
    # All 24 rows padded to 32 (768 tokens) fail; at half that the 16 short rows go alone (128) and fail, then 64;
    # 32 fits, and the rest of the call keeps that budget: 4 passes of 4 short rows, 8 of one long one.
    assert run.tried == [768, 128, 64] + [32] * 12
    assert run.budget == 32 and gpu.released == 3 and not run.failed
    assert _vectors(run) == _vectors(unfailed) == [row * 10 for row in range(len(widths))]
    assert unfailed.tried == [768]


def test_a_row_that_does_not_fit_alone_fails_by_itself_and_the_others_keep_their_vectors() -> None:
    widths = [8, 8, 256]
    run, gpu = _run(widths, capacity=100)
    assert run.tried == [768, 16, 256]  # at half, the two short rows go together; the wide one fails alone
    assert run.failed == [2] and gpu.released == 2
    assert _vectors(run) == [0, 10]
    assert run.budget == 384  # a single row's failure does not shrink the budget further


def test_an_error_other_than_out_of_memory_is_not_retried() -> None:
    def broken(rows: range) -> list[int]:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_batches([8, 8], 8, 64, broken, is_out_of_memory, lambda: None)


def test_out_of_memory_is_recognized_by_class_or_by_message() -> None:
    assert is_out_of_memory(FakeOutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Half"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_the_default_budget_fits_a_10_gb_card_by_the_estimate() -> None:
    minilm = activation_bytes_per_token(384, 1536, 12, 256, 2)
    bert_base_512 = activation_bytes_per_token(768, 3072, 12, 512, 2)
    assert (minilm, bert_base_512) == (23_040, 46_080)  # the numbers in embed_plan.py's comment
    ten_gb_free = int(9.5 * 2**30)  # an RTX 3080 once the CUDA context is up
    assert DEFAULT_BATCH_TOKENS * bert_base_512 + 220 * 2**20 < ten_gb_free * 0.7
    assert gpu_token_budget(ten_gb_free, 45 * 2**20, minilm, 256) > DEFAULT_BATCH_TOKENS  # MiniLM: the default
    assert RagConfig.model_fields["embed_batch_tokens"].default == DEFAULT_BATCH_TOKENS


def test_the_gpu_budget_comes_from_free_memory_and_refuses_a_model_that_cannot_fit() -> None:
    large = activation_bytes_per_token(1024, 4096, 16, 512, 2)  # a BERT-large shape: 61,440 bytes a token
    assert gpu_token_budget(4 * 2**30, 2**30, large, 512) == int(3 * 2**30 * 0.7) // large  # 36,700 tokens
    assert gpu_token_budget(2**30 + large * 600, 2**30, large, 512) == 512  # room for one chunk: never below it
    with pytest.raises(ConfigError, match=r"does not fit this GPU.*1024 MiB free"):
        gpu_token_budget(2**30, 1000 * 2**20, large, 512)


def test_queries_embed_on_the_cpu_under_auto_and_hold_the_gpu_slot_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.common import gpu
    from flows.rag import embed

    held: list[str] = []
    ran: list[tuple[str, list[str]]] = []  # (device the model was loaded on, slots held while it embedded)

    class Loaded:
        def __init__(self, device: str) -> None:
            self.device = device

        def embed_texts(self, texts: list[str]) -> list[str]:
            ran.append((self.device, list(held)))
            return texts

    def fake_get_embedder(model: str, device: str, precision: str) -> Loaded:
        return Loaded(device)

    @contextmanager
    def fake_section(slot: str | None) -> Iterator[None]:
        held.append(str(slot))
        yield
        held.remove(str(slot))

    monkeypatch.setattr(embed, "get_embedder", fake_get_embedder)
    monkeypatch.setattr(gpu, "gpu_section", fake_section)
    on_thanos = load_config({"gpu_slot": "gpu:thanos"})
    for config in (on_thanos, on_thanos.with_explicit(device="cuda"), load_config({"device": "cuda"})):
        assert embed.embed_queries(config, ["q"]) == ["q"]
    assert ran == [("cpu", []), ("cuda", ["gpu:thanos"]), ("cuda", [])]  # a node without a slot holds none
