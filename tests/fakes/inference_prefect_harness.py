"""One Prefect test harness shared by the inference and research flow tests (CONVENTIONS §9: one per
session, never nested), until tests/conftest.py provides a session-wide one; then delete this."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.testing.utilities import prefect_test_harness

_stack: ExitStack | None = None
_users = 0


@contextmanager
def shared_harness() -> Iterator[None]:
    """The first user starts the harness, the last one to leave stops it."""
    global _stack, _users
    if _stack is None:
        _stack = ExitStack()
        _stack.enter_context(prefect_test_harness(server_startup_timeout=120))
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0:
            _stack.close()
            _stack = None
