"""The flow tests keep their batch files in their own temp folder: allow it as a batch folder of this node."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def tmp_path_is_a_batch_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_BATCH_ROOTS", str(tmp_path))
