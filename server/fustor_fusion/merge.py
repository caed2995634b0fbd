"""One pipe's tree plus the merge rules of DESIGN §6 (tombstones, suspects, blind spots, scans).

Sync, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fustor.config import ViewParams


class PipeTree:
    def __init__(
        self,
        pipe_id: str,
        params: ViewParams,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipe_id = pipe_id
        self.params = params
        self._wall = wall
        self._mono = mono
