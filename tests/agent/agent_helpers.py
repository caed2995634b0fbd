"""Helpers for the agent tests: row recorders and polling with deadlines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio


class Recorder:
    """Collects rows (parsed) emitted by a watcher or a scan sink."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.rescans: list[str] = []

    def emit(self, rows: list[str]) -> None:
        self.rows.extend(json.loads(r) for r in rows)

    async def sink(self, rows: list[str]) -> None:
        self.emit(rows)

    def rescan(self, reason: str) -> None:
        self.rescans.append(reason)

    def ops(self, op: str, path: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["op"] == op and (path is None or r["path"] == path)]

    def paths(self, op: str = "upsert") -> set[str]:
        return {r["path"] for r in self.rows if r["op"] == op}


async def wait_until(pred: Callable[[], bool], within: float = 5.0) -> None:
    """Poll a condition that no event announces (files, another component's state)."""
    with trio.fail_after(within):
        while not pred():  # noqa: ASYNC110
            await trio.sleep(0.02)
