"""The parallel directory-walk engine shared by scans and the watcher's watch installation.

`visit(task, out)` runs in worker threads (trio.to_thread under a CapacityLimiter): it lists a
directory, appends rows to `out` and returns the subdirectories to visit. A thread goes on
depth-first until it has a chunk of rows; the chunk goes through a short FIFO to one task
that feeds the sink (so the walk continues while a batch is on the wire), and only then are
the thread's pending subdirectories published to the other workers: a directory's own row
always precedes its children's rows. A thread whose own subtree is done goes on with
published directories. Memory is proportional to the directories in flight.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Generic, TypeVar

import trio

log = logging.getLogger(__name__)

Sink = Callable[[list[str]], Awaitable[None]]

_PROBE_VISITS = 200          # directories timed before the thread count is decided
_PROBE_NS = 200_000_000      # ... or this much time spent listing them
_IO_WAITS = 0.5              # voluntary context switches per directory that mean I/O waits


@contextlib.contextmanager
def unwrap_group() -> Iterator[None]:
    """Re-raise the one real error of a task group as itself, so callers can catch e.g.
    SessionExpiredError raised by a sink inside worker tasks."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        if len(real) == 1:
            raise real[0] from group
        if not real and leaves:
            raise leaves[0] from None
        raise


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


T = TypeVar("T")


def _waits() -> int:
    """Voluntary context switches of the calling thread so far (it blocked: I/O, a lock)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


class Walker(Generic[T]):
    """The parallel walk engine: `visit(task, out)` runs in a worker thread, appends rows to
    `out` and returns the subdirectories to visit next."""

    def __init__(
        self,
        visit: Callable[[T, list[str]], list[T]],
        sink: Sink,
        *,
        workers: int,
        limiter: trio.CapacityLimiter | None = None,
        chunk: int = 2000,
        probe: bool = False,
        depth: int = 2,
    ) -> None:
        self._visit = visit
        self._depth = depth
        self._queue: trio.MemorySendChannel[list[str]] | None = None
        self._sink = sink
        self._workers = max(1, workers)
        self._limiter = limiter or trio.CapacityLimiter(self._workers)
        self._chunk = chunk
        self._stack: list[T] = []
        # Threads take published directories themselves (under this lock) rather than return
        # to the event loop for each: a thread round trip costs ~200 µs of CPU, as much as
        # listing a small directory.
        self._lock = threading.Lock()
        self._active = 0
        self._changed = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        # Parallelism is decided by measurement: page-cached storage makes the walk CPU-bound
        # and extra threads only fight for the GIL (2× slower here), while NFS, FUSE or cold
        # disks are latency-bound and gain from every thread. One thread lists `_PROBE_VISITS`
        # directories; if it blocked on I/O (`_IO_WAITS` voluntary context switches per
        # directory: 0 page-cached, ~50 on bindfs) → all workers. Not wall time per entry: on a
        # busy machine preemption makes a cached walk look slow (those switches are
        # involuntary).
        self._probing = probe and self._workers > 1
        self._allowed = 1 if self._probing else self._workers
        self._probe_ns = 0
        self._probe_visits = 0
        self._probe_waits = 0

    def spill(self, out: list[str]) -> None:
        """From a worker thread: hand over the rows gathered so far (a huge directory is
        streamed instead of held whole)."""
        trio.from_thread.run(self._flush, out[:], [], trio_token=self._token)
        out.clear()

    async def run(self, roots: Iterable[T]) -> None:
        self._stack = list(roots)
        # Rows go through a short FIFO to one task that feeds the sink: the walk goes on
        # while a batch is on the wire (order is kept: one queue, one consumer).
        send, recv = trio.open_memory_channel[list[str]](self._depth)
        self._queue = send
        with unwrap_group():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._consume, recv)
                async with send, trio.open_nursery() as workers:
                    for _ in range(self._workers):
                        workers.start_soon(self._worker)

    async def _consume(self, recv: trio.MemoryReceiveChannel[list[str]]) -> None:
        async with recv:
            async for rows_ in recv:
                await self._sink(rows_)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _worker(self) -> None:
        while True:
            while not self._stack or self._active >= self._allowed:
                if not self._stack and self._active == 0:
                    self._wake()
                    return
                await self._changed.wait()
            task = self._take()
            if task is None:
                continue    # a running thread took it
            self._active += 1
            try:
                await trio.to_thread.run_sync(self._walk, task, limiter=self._limiter)
            finally:
                self._active -= 1
                self._wake()

    async def _flush(self, out: list[str], share: list[T]) -> None:
        if out:
            assert self._queue is not None
            await self._queue.send(out)
        if share:
            with self._lock:
                self._stack.extend(share)
            self._wake()

    def _take(self) -> T | None:
        with self._lock:
            return self._stack.pop() if self._stack else None

    def _starving(self) -> bool:
        # Read without a lock: a stale answer only flushes a chunk early or late.
        return not self._stack and self._active < self._allowed

    def _probe(self, ns: int, waits: int) -> None:
        self._probe_ns += ns
        self._probe_visits += 1
        self._probe_waits += waits
        if self._probe_visits >= _PROBE_VISITS or self._probe_ns >= _PROBE_NS:
            per = self._probe_waits / self._probe_visits
            if per >= _IO_WAITS:
                log.debug("walk: %.1f I/O waits per directory, using %d threads", per,
                          self._workers)
                self._allowed = self._workers
                trio.from_thread.run_sync(self._wake, trio_token=self._token)
            self._probing = False

    def _walk(self, first: T) -> None:
        local = [first]
        out: list[str] = []
        while True:
            # The thread may walk the whole tree in one call: see a cancellation here, as the
            # event loop cannot stop a thread.
            trio.from_thread.check_cancelled()
            if not local:
                more = self._take()
                if more is None:
                    break
                local.append(more)
            task = local.pop()
            if self._probing:
                t0, w0 = time.perf_counter_ns(), _waits()
                local.extend(self._visit(task, out))
                self._probe(time.perf_counter_ns() - t0, _waits() - w0)
            else:
                local.extend(self._visit(task, out))
            if len(out) >= self._chunk or (len(local) > 1 and self._starving()):
                share = local[:-1] if len(out) < self._chunk else local[:]
                del local[: len(share)]
                trio.from_thread.run(self._flush, out, share, trio_token=self._token)
                out = []
        if out:
            trio.from_thread.run(self._flush, out, [], trio_token=self._token)
