"""A token bucket: `burst` requests at once, then `per_s` a second on average."""
from __future__ import annotations

import time


class TokenBucket:
    def __init__(self, per_s: float, burst: int, clock=time.monotonic) -> None:
        self._per_s = per_s
        self._burst = burst
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self, cost: float = 1) -> float:
        """0 when a request of `cost` tokens may go ahead (and counts it), else the seconds
        until it may."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_s)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self._per_s
