"""Per-API-key rate limiting (a moving window, kept in the process's memory)."""

from __future__ import annotations

import math
import time

from limits import parse, storage, strategies


class KeyRateLimiter:
    """Each API process enforces the limit on its own; with N replicas a key gets up to N times it."""

    def __init__(self, spec: str) -> None:
        self._item = parse(spec)
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def retry_after(self, key_id: str) -> int | None:
        """None if the request may proceed, else the seconds to wait before retrying."""
        if self._limiter.hit(self._item, key_id):
            return None
        reset_at = self._limiter.get_window_stats(self._item, key_id).reset_time
        return max(1, math.ceil(reset_at - time.time()))
