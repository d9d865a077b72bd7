"""Rate limits in requests/minute and tokens/hour, as token buckets with an injectable clock.

Requests are reserved before they are sent; tokens are only known from the response's ``usage``, so
they are charged afterwards and the bucket may go into debt: the next request waits until it is repaid.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Bucket:
    """``capacity`` units, refilled continuously at ``capacity / period_s`` per second."""

    def __init__(self, capacity: float, period_s: float, now: float) -> None:
        if capacity <= 0:
            raise ValueError("a rate limit must be positive")
        self.capacity = capacity
        self.rate = capacity / period_s
        self.level = capacity
        self._stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` units are available (0 if they are now)."""
        self.refill(now)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_hour: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        now = clock()
        self._requests = Bucket(requests_per_minute, 60.0, now) if requests_per_minute else None
        self._tokens = Bucket(tokens_per_hour, 3600.0, now) if tokens_per_hour else None

    def try_acquire(self) -> float:
        """Reserve one request and return 0, or return how long to wait before trying again."""
        now = self._clock()
        wait = 0.0
        if self._tokens is not None:
            # Any positive balance lets a request go; its real cost is charged when it returns.
            wait = max(wait, self._tokens.wait_for(min(1.0, self._tokens.capacity), now))
        if self._requests is not None:
            wait = max(wait, self._requests.wait_for(1.0, now))
        if wait > 0:
            return wait
        if self._requests is not None:
            self._requests.level -= 1.0
        return 0.0

    def record_tokens(self, tokens: int) -> None:
        if self._tokens is not None and tokens > 0:
            self._tokens.refill(self._clock())
            self._tokens.level -= tokens
