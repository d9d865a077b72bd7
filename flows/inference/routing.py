"""Where a batch goes when the primary (vLLM) endpoint is down: the seed's routing decision tree.

``on_primary_down``:
- ``fail``: fail at once with a clear message;
- ``wait``: poll the primary for up to ``max_wait_s``, then fail;
- ``fallback``: poll the primary for up to ``max_wait_s`` (0 = not at all), then use the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from flows.common.errors import ConfigError, ServiceUnavailable

POLICIES = ("wait", "fail", "fallback")


class Action(Enum):
    USE_PRIMARY = "primary"
    USE_FALLBACK = "fallback"
    WAIT = "wait"
    FAIL = "fail"


def decide(primary_up: bool, waited_s: float, policy: str, max_wait_s: float, has_fallback: bool) -> Action:
    """Pure: the next step given the primary's health and how long we have already waited."""
    if policy not in POLICIES:
        raise ConfigError(f"on_primary_down must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "fallback" and not has_fallback:
        raise ConfigError("on_primary_down is 'fallback' but no fallback (LiteLLM) URL is configured")
    if primary_up:
        return Action.USE_PRIMARY
    if policy == "fail":
        return Action.FAIL
    if waited_s < max_wait_s:
        return Action.WAIT
    return Action.USE_FALLBACK if policy == "fallback" else Action.FAIL


def choose_endpoint(
    primary: str,
    fallback: str | None,
    is_up: Callable[[str], bool],
    policy: str,
    max_wait_s: float,
    poll_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll ``is_up(primary)`` per :func:`decide` and return the base URL to use, or raise."""
    start = clock()
    while True:
        waited = clock() - start
        action = decide(is_up(primary), waited, policy, max_wait_s, fallback is not None)
        if action is Action.USE_PRIMARY:
            return primary
        if action is Action.USE_FALLBACK:
            assert fallback is not None
            return fallback
        if action is Action.FAIL:
            raise ServiceUnavailable(
                f"the inference endpoint {primary} is down (waited {waited:.0f}s, on_primary_down={policy})"
            )
        sleep(max(0.0, min(poll_s, max_wait_s - waited)))
