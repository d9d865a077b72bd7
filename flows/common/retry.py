"""The one backoff policy of the project's retried calls (Drive API, Qdrant writes): truncated exponential backoff
with full jitter, never shorter than the server's Retry-After, with ``sleep``/``rng`` injectable for tests."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 1.0
    cap_s: float = 64.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = self.rng.uniform(0, min(self.cap_s, self.base_s * 2**attempt))
        return max(backoff, retry_after or 0.0)
