"""The logical clock (watermark): an estimate of the storage's "now".

Fusion time minus the most frequent (mode) skew between Fusion time and the mtimes carried
by realtime events, over a sliding window. The mode, not the mean, so one file with a
far-future (or far-past) mtime cannot move it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable


class LogicalClock:
    def __init__(
        self,
        *,
        window: int = 1000,
        resolution: float = 1.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._window: deque[int] = deque()
        self._counts: Counter[int] = Counter()
        self._size = window
        self._resolution = resolution
        self._wall = wall

    def observe(self, mtime: float, fusion_time: float | None = None) -> None:
        """Record one realtime event's mtime seen at `fusion_time` (default: now)."""
        now = self._wall() if fusion_time is None else fusion_time
        bucket = round((now - mtime) / self._resolution)
        self._window.append(bucket)
        self._counts[bucket] += 1
        if len(self._window) > self._size:
            old = self._window.popleft()
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]

    @property
    def skew(self) -> float:
        """Fusion time minus storage time, in seconds (0 with no samples)."""
        if not self._counts:
            return 0.0
        # Ties go to the smallest skew: the storage clock closest to ours.
        best = max(self._counts.items(), key=lambda kv: (kv[1], -abs(kv[0])))
        return best[0] * self._resolution

    @property
    def samples(self) -> int:
        return len(self._window)

    def now(self, fusion_time: float | None = None) -> float:
        """The watermark: the storage's estimated current time."""
        t = self._wall() if fusion_time is None else fusion_time
        return t - self.skew
