"""Time-bounded, size-bounded caches (sync, no I/O): attributes by path, listing pages by
(directory, cursor), and names known to be missing. Plus the token bucket that limits
realtime finds.

Every cache of one kind has one TTL, so insertion order is expiry order: re-inserting a key
moves it to the end, and both expiry and eviction pop from the front in O(1).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most `max_items` values, each valid for `ttl` seconds after it was put."""

    def __init__(
        self, ttl: float, max_items: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.ttl = ttl
        self.max_items = max_items
        self._clock = clock
        self._items: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        items = self._items
        items.pop(key, None)
        items[key] = (self._clock() + self.ttl, value)
        if len(items) > self.max_items:
            self._trim()

    def put_many(self, pairs: list[tuple[K, V]]) -> None:
        """Like put() for each pair, with one clock read (listing pages hold thousands)."""
        if self.ttl <= 0:
            return
        items = self._items
        until = self._clock() + self.ttl
        for key, value in pairs:
            items.pop(key, None)
            items[key] = (until, value)
        if len(items) > self.max_items:
            self._trim()

    def discard(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def _trim(self) -> None:
        """Drop the oldest items (expired ones are the oldest) until a tenth below the bound,
        so a stream of inserts at the bound does not trim on every put."""
        items = self._items
        excess = len(items) - (self.max_items - self.max_items // 10)
        for key in list(itertools.islice(items, excess)):
            del items[key]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; take() is False when empty."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
