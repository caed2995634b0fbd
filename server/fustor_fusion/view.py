"""A view: one PipeTree per pipe routed to it, queried as their union (DESIGN §3).

Sync, no I/O: the service applies batches and answers queries between two awaits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from fustor.config import ViewConfig
from fustor.errors import NotFoundError
from fustor.protocol import Event, ScanEnd, ScanStart
from fustor_fusion.merge import PipeTree

__all__ = ["PipeTree", "View"]


class View:
    def __init__(
        self,
        config: ViewConfig,
        pipe_ids: Sequence[str],
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = config.id
        self.config = config
        self._wall = wall
        self._mono = mono
        self.on_scan_end: Callable[[str, ScanEnd, ScanStart], None] | None = None
        self._trees: dict[str, PipeTree] = {}
        for pid in pipe_ids:
            self._trees[pid] = PipeTree(pid, config.driver_params, wall=wall, mono=mono)

    def tree_of(self, pipe_id: str) -> PipeTree:
        try:
            return self._trees[pipe_id]
        except KeyError:
            raise NotFoundError(f"pipe {pipe_id!r} is not routed to view {self.id!r}") from None

    def apply(self, pipe_id: str, events: Sequence[Event]) -> int:
        raise NotImplementedError

    def scan_progress(self, pipe_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def snapshot_done(self, pipe_id: str) -> bool:
        raise NotImplementedError

    def expire(self) -> None:
        raise NotImplementedError

    def node(self, path: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def tree(
        self,
        path: str,
        *,
        recursive: bool = True,
        max_depth: int | None = None,
        only_path: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        raise NotImplementedError

    def search(
        self, pattern: str, *, path: str = "/", limit: int = 1000
    ) -> tuple[list[dict[str, Any]], bool]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def blind_spots(self) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError

    def suspects(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def sentinel_targets(self, pipe_id: str, *, limit: int = 1000) -> dict[str, list[str]]:
        raise NotImplementedError
