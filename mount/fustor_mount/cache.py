"""Time-bounded, size-bounded caches (sync, no I/O): attributes by path, listing pages by
(directory, cursor), and names known to be missing. Plus the token bucket that limits
realtime finds.

Items live `ttl` seconds, or less when put with their own (shorter) ttl. Insertion order is
eviction order: re-inserting a key moves it to the end, and eviction pops from the front in
O(1); expiry pops expired items from the front too, and get() drops an expired one it meets
(an item with a short ttl behind longer ones waits for one of the two). An OrderedDict,
not a dict: a plain dict that is popped from the front finds its next first item by scanning
the holes left behind, which made a walk of 250k entries spend most of its time there.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Values valid for `ttl` seconds after they were put, with a total weight of at most
    `max_weight` (weight 1 per value by default; a listing page weighs its entry count)."""

    def __init__(
        self, ttl: float, max_weight: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_weight < 1:
            raise ValueError("max_weight must be at least 1")
        self.ttl = ttl
        self.max_weight = max_weight
        self.weight = 0
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[key]
            self.weight -= item[2]
            return None
        return item[1]

    def put(self, key: K, value: V, weight: int = 1, ttl: float | None = None) -> None:
        if self.ttl <= 0:
            return
        self.discard(key)
        now = self._clock()
        self._items[key] = (now + (self.ttl if ttl is None else min(ttl, self.ttl)), value, weight)
        self.weight += weight
        if self.weight > self.max_weight:
            self._trim()
        self._expire(now, 4)

    def put_many(self, pairs: list[tuple[K, V]], ttls: list[float] | None = None) -> None:
        """Like put() for each pair (weight 1, ttl from `ttls` if given), with one clock
        read: pages hold thousands."""
        if self.ttl <= 0:
            return
        items = self._items
        now = self._clock()
        until = now + self.ttl
        added = 0
        for i, (key, value) in enumerate(pairs):
            old = items.pop(key, None)
            if old is not None:
                added -= old[2]
            items[key] = (until if ttls is None else now + min(ttls[i], self.ttl), value, 1)
            added += 1
        self.weight += added
        if self.weight > self.max_weight:
            self._trim()
        self._expire(now, 2 * len(pairs) + 4)

    def _expire(self, now: float, limit: int) -> None:
        """Drop up to `limit` expired items from the front, so memory held by a walk of a big
        tree comes back once its entries expire (not only when the bound is reached)."""
        items = self._items
        while limit > 0 and items:
            key, item = next(iter(items.items()))
            if item[0] > now:
                return
            del items[key]
            self.weight -= item[2]
            limit -= 1

    def discard(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.weight -= old[2]

    def clear(self) -> None:
        self._items.clear()
        self.weight = 0

    def _trim(self) -> None:
        """Drop the oldest items (expired ones are the oldest) until a tenth below the bound,
        so a stream of inserts at the bound does not trim on every put."""
        items = self._items
        target = self.max_weight - self.max_weight // 10
        while self.weight > target and items:
            self.weight -= items.popitem(last=False)[1][2]


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
