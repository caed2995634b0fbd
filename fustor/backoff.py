"""Capped exponential backoff with jitter, pure and sync (no sleeping here).

Reconnect loops ask `next()` for the delay before the next try and call `reset()` after a
success; `failing` tells whether the last attempt failed, for "log once per state change".
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        *,
        factor: float = 2.0,
        jitter: float = 0.1,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rand = rand
        self._current = 0.0
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def next(self) -> float:
        """Record one failure and return how long to wait before the next try."""
        self.failures += 1
        if self._current == 0.0:
            self._current = self.initial
        else:
            self._current = min(self.maximum, self._current * self.factor)
        # Jitter spreads reconnecting agents apart; it only shortens, so `maximum` holds.
        return self._current * (1.0 - self.jitter * self._rand())

    def reset(self) -> None:
        """The operation succeeded: the next failure starts again from `initial`."""
        self._current = 0.0
        self.failures = 0
