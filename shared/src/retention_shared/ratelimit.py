"""Per-API-key rate limiting (a sliding window counter, kept in the process's memory)."""

from __future__ import annotations

import math
import time

from limits import parse, storage, strategies


class KeyRateLimiter:
    """Each API process enforces the limit on its own; with N replicas a key gets up to N times it."""

    def __init__(self, spec: str) -> None:
        self._item = parse(spec)
        # A sliding window counter costs the same whatever the limit: a moving window keeps one
        # timestamp per request and inserts each new one at the front of the key's list, so a
        # key allowed thousands of requests a second pays for copying thousands on every call.
        self._limiter = strategies.SlidingWindowCounterRateLimiter(storage.MemoryStorage())

    def retry_after(self, key_id: str) -> int | None:
        """None if the request may proceed, else the seconds to wait before retrying."""
        if self._limiter.hit(self._item, key_id):
            return None
        reset_at = self._limiter.get_window_stats(self._item, key_id).reset_time
        return max(1, math.ceil(reset_at - time.time()))


class FailureLimiter:
    """Counts failed attempts per key (e.g. sign-ins per client address) in a moving window; a
    key that failed `spec` times is refused until the oldest failure leaves the window. Successes
    cost nothing, so a user who signs in fine is never slowed down by the limit."""

    def __init__(self, spec: str) -> None:
        self._item = parse(spec)
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def retry_after(self, key: str) -> int | None:
        """None if another attempt may be made, else the seconds to wait."""
        if self._limiter.test(self._item, key):
            return None
        reset_at = self._limiter.get_window_stats(self._item, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def failed(self, key: str) -> None:
        self._limiter.hit(self._item, key)
