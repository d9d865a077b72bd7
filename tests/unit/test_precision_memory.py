"""The bf16 timing is remembered per machine and model, and forgotten when either changes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from flows.rag.precision_memory import cpu_name, machine_key, recalled_speedup, remember_speedup


def test_a_remembered_speedup_is_recalled_for_its_key_only(tmp_path: Path) -> None:
    config = tmp_path / "model" / "config.json"
    config.parent.mkdir()
    config.write_text("{}")
    memory = tmp_path / "data" / "cpu-precision.json"
    key = machine_key("Some CPU", 2, "2.13.0", config)
    assert recalled_speedup(memory, key) is None
    remember_speedup(memory, key, 1.23456)
    remember_speedup(memory, machine_key("Some CPU", 2, "2.14.0", config), 0.7)
    assert recalled_speedup(memory, key) == 1.2346
    assert recalled_speedup(memory, machine_key("Some CPU", 4, "2.13.0", config)) is None  # other core count
    os.utime(config, ns=(1, 1))  # the model folder replaced in place
    assert recalled_speedup(memory, machine_key("Some CPU", 2, "2.13.0", config)) is None


def test_a_corrupt_or_unwritable_memory_only_means_timing_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = tmp_path / "cpu-precision.json"
    memory.write_text("{not json")
    assert recalled_speedup(memory, "k") is None
    remember_speedup(memory, "k", 1.5)  # replaces the corrupt file
    assert recalled_speedup(memory, "k") == 1.5
    blocked = tmp_path / "a-file" / "cpu-precision.json"
    blocked.parent.write_text("")  # its folder is a file: nothing can be written there
    with caplog.at_level(logging.WARNING):
        remember_speedup(blocked, "k", 1.5)
    assert "timed again next time" in caplog.text


def test_the_cpu_has_a_name() -> None:
    assert cpu_name().strip()
