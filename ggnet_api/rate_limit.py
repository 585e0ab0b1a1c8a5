"""Token buckets per key (a source address, a MAC) with a bound on the keys kept.

Used on the boot path, which anyone on the PCs' network reaches without a token, and
for failed authentications per client: each key may spend `limit` at once and then
`limit` per `window` seconds, refilled evenly.  The keys tracked are capped: past `max_keys` the least recently seen are
forgotten (a forgotten key starts again with a full bucket, which costs less than
refusing a real PC the server has not seen for a while).  One lock; every call is a
few dictionary operations, so it stays far below the boot script's latency budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("a rate limit needs limit >= 1, window > 0 and max_keys >= 1")
        self.limit = float(limit)
        self.rate = limit / window  # tokens per second
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one request of `key`: 0.0 when allowed, else the seconds until the
        next request would be (nothing is spent then)."""
        return self._bucket(key, spend=True)

    def wait(self, key: str) -> float:
        """The seconds until `key` may spend again (0.0: now); nothing is spent."""
        return self._bucket(key, spend=False)

    def _bucket(self, key: str, spend: bool) -> float:
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.limit, now))
            tokens = min(self.limit, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0 if spend else 0.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate
            if tokens < self.limit:  # a full bucket is the same as no entry
                self._buckets[key] = (tokens, now)  # now the most recently seen
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


def retry_after(wait: float) -> str:
    """The Retry-After header's value (whole seconds, at least 1) for a wait."""
    return str(max(1, math.ceil(wait)))
