"""Prefect harness for the inference flow tests, shared with the other flow tests of this area."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.inference_prefect_harness import shared_harness


@pytest.fixture(scope="session")
def inference_prefect() -> Iterator[None]:
    with shared_harness():
        yield
