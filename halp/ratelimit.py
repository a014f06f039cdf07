# -*- test-case-name: halp.test.test_ratelimit -*-
"""
Token buckets, for throttling what one peer may send.

Pure logic: the time comes in as an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["KeyedLimiter", "TokenBucket"]

K = TypeVar("K")


class TokenBucket:
    """
    ``burst`` tokens at most, refilled at ``rate`` tokens per second.

    :param now: the time the bucket starts, full.
    """

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, n: float, now: float) -> float:
        """
        Take ``n`` tokens if there are that many.

        :return: 0 when taken; otherwise the seconds until ``n`` tokens
            will be there (infinite if ``n`` is more than ``burst``), and
            nothing is taken.
        """
        self._refill(now)
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        if n > self.burst:
            return float("inf")
        return (n - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class KeyedLimiter(Generic[K]):
    """
    One :class:`TokenBucket` per key (a peer's address), for at most
    ``max_keys`` keys: when more are seen, buckets that are full again are
    forgotten (a new bucket starts full, so nothing is lost), then the
    least recently used.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        if rate <= 0 or burst <= 0 or max_keys < 1:
            raise ValueError("rate, burst and max_keys must be positive")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def take(self, key: K, n: float, now: float) -> float:
        """Take ``n`` tokens from ``key``'s bucket; see :meth:`TokenBucket.take`."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._shrink(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(n, now)

    def _shrink(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
