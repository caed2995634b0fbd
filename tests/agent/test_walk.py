"""The walk engine's thread-count probe: one thread on CPU-bound (page-cached) storage, all
workers once listing blocks on I/O."""

from __future__ import annotations

import itertools
import time

import pytest
import trio

from fustor.agent import walk
from fustor.agent.walk import Walker


async def _walk(workers: int) -> Walker[tuple[int, ...]]:
    seen = [0]

    def visit(node: tuple[int, ...], out: list[str]) -> list[tuple[int, ...]]:
        seen[0] += 1
        out.append(str(node))
        # 1 + 8 + 64 + 512 directories: more than the probe's window.
        return [node + (i,) for i in range(8)] if len(node) < 3 else []

    rows: list[str] = []

    async def sink(batch: list[str]) -> None:
        rows.extend(batch)

    walker: Walker[tuple[int, ...]] = Walker(visit, sink, workers=workers, chunk=50, probe=True)
    await walker.run([()])
    assert len(rows) == seen[0] == 585
    return walker


async def test_cpu_bound_walk_stays_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walk, "_waits", lambda: 0)
    walker = await _walk(4)
    assert walker._allowed == 1


async def test_walk_blocked_on_io_uses_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each directory listing blocks once (a counter that moves by one per call pair).
    ticks = itertools.count()
    monkeypatch.setattr(walk, "_waits", lambda: next(ticks))
    walker = await _walk(4)
    assert walker._allowed == 4


async def test_cancelled_walk_stops_within_a_directory() -> None:
    # One thread may walk the whole tree in one call (no rows: no hand-over to the event
    # loop), as the watch installation does: a cancellation still ends it at once.
    visited = [0]

    def visit(node: tuple[int, ...], out: list[str]) -> list[tuple[int, ...]]:
        visited[0] += 1
        time.sleep(0.001)
        return [node + (i,) for i in range(10)] if len(node) < 4 else []

    async def sink(batch: list[str]) -> None:
        return None

    walker: Walker[tuple[int, ...]] = Walker(visit, sink, workers=1, chunk=1 << 30)
    t0 = time.monotonic()
    with trio.move_on_after(0.2):
        await walker.run([()])
    assert time.monotonic() - t0 < 1.0
    assert visited[0] < 11111
