"""A Prefect test harness for the research flow tests, only while tests/conftest.py has none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def research_prefect() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield
