"""The GPU embed benchmark runs on CPU with tiny sizes, so it cannot rot between GPU sessions."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from bench import bench_embed_gpu


def test_embed_bench_prepares_portable_inputs_and_measures_all_three_ways(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    bench_embed_gpu.main(["--save-inputs", str(inputs), "--files", "1"])
    texts = json.loads((inputs / "chunks.json").read_text())
    assert texts and all(isinstance(t, str) and t.strip() for t in texts)
    with safe_open(str(inputs / "minilm-fp16" / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert {str(weights.get_slice(name).get_dtype()) for name in names} == {"F16"}

    tiny = "--device cpu --chunks 12 --large-hidden 64 --large-layers 1 --batch-sizes 4 8 --stage-batch 8 --repeats 1"
    rows = bench_embed_gpu.main(["--inputs", str(inputs), *tiny.split(), "--out", str(tmp_path)])
    assert [r["model"] for r in rows] == ["all-MiniLM-L6-v2", "bert-64x1"]
    for row in rows:
        assert row["stage"] > 0 and row["encode"] > 0 and row["forward"] > 0
        assert row["encode_batch"] in (4, 8)
        assert row["min_cosine"] > 0.9999  # fp32 on a CPU: the stage's vectors are encode()'s
    saved = json.loads((tmp_path / "embed_cpu.json").read_text())
    assert saved["device"] == "cpu" and saved["chunks"] == 12 and len(saved["rows"]) == 2
