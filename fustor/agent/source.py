"""One source directory shared by all pipes that read it: one watcher, one scan limiter.

The hub fans realtime rows out to each pipe's bounded buffer, checks the root's health
(missing, not a directory, unmounted, another device) so an absent source is reported as a
fault and never as empty, and restarts the watcher when the root comes back.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import deque

import trio

from fustor.agent.scanner import compile_excludes
from fustor.agent.walk import unwrap_group
from fustor.agent.watcher import Watcher, WatchStats
from fustor.agent.watches import unescape_mountinfo
from fustor.config import SourceConfig

log = logging.getLogger(__name__)

ROOT_CHECK_SEC = 1.0


class RealtimeBuffer:
    """A pipe's realtime rows waiting to be sent (bounded; overflow is remembered)."""

    def __init__(self, capacity: int, name: str = "") -> None:
        self.capacity = capacity
        self.name = name
        self._rows: deque[str] = deque()
        self._ready = trio.Event()
        self.overflowed = False     # rows were dropped since the last rescan request
        self.dropped = 0
        self.rescan_reasons: list[str] = []
        self._rescan_wanted = trio.Event()

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, rows: list[str]) -> None:
        room = self.capacity - len(self._rows)
        if room < len(rows):
            if not self.overflowed:
                log.warning("pipe %s: realtime buffer full (%d events, Fusion unreachable?): "
                            "dropping events, a rescan follows once they are sent",
                            self.name, self.capacity)
            self.overflowed = True
            self.dropped += len(rows) - max(room, 0)
            rows = rows[: max(room, 0)]
        if rows:
            self._rows.extend(rows)
            self._ready.set()

    async def wait(self) -> None:
        while not self._rows:
            await self._ready.wait()
            self._ready = trio.Event()

    def peek(self, n: int) -> list[str]:
        if n >= len(self._rows):
            return list(self._rows)
        return [self._rows[i] for i in range(n)]

    def pop(self, n: int) -> None:
        for _ in range(min(n, len(self._rows))):
            self._rows.popleft()

    def request_rescan(self, reason: str) -> None:
        self.rescan_reasons.append(reason)
        self._rescan_wanted.set()

    def clear_rescan(self) -> None:
        """A scan of everything starts now: earlier requests are covered by it."""
        self.rescan_reasons = []
        self._rescan_wanted = trio.Event()

    async def wait_rescan(self) -> list[str]:
        await self._rescan_wanted.wait()
        self._rescan_wanted = trio.Event()
        reasons, self.rescan_reasons = self.rescan_reasons, []
        return reasons


def root_fault(root: str, expect_dev: int | None, was_mount: bool) -> str | None:
    """Why the root cannot be trusted right now, or None."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return "root_missing"
    except OSError as exc:
        return f"root_unreadable: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return "root_not_a_directory"
    if was_mount and not is_mountpoint(root):
        return "root_unmounted"
    if expect_dev is not None and st.st_dev != expect_dev:
        return "root_device_changed"
    return None


class SourceHub:
    """Runs the watcher of one source and serves its pipes."""

    def __init__(self, config: SourceConfig, *, watch_limit: int | None = None) -> None:
        self.config = config
        # A symlinked source path is followed once, here: below the root nothing is followed.
        self.root = os.path.realpath(config.uri).rstrip("/") or "/"
        params = config.driver_params
        self.exclude = compile_excludes(params.exclude)
        self.workers = params.max_scan_workers
        self.limiter = trio.CapacityLimiter(params.max_scan_workers)
        self._subs: list[RealtimeBuffer] = []
        self._watch_limit = watch_limit
        self.watcher: Watcher | None = None
        self._ready = trio.Event()
        self._dev: int | None = None
        self._was_mount = False
        self.fault: str | None = None

    # -------------------------------------------------------------- pipes
    def subscribe(self, buf: RealtimeBuffer) -> None:
        self._subs.append(buf)

    def unsubscribe(self, buf: RealtimeBuffer) -> None:
        if buf in self._subs:
            self._subs.remove(buf)

    def _emit(self, rows: list[str]) -> None:
        for sub in self._subs:
            sub.put(rows)

    def _rescan(self, reason: str) -> None:
        for sub in self._subs:
            sub.request_rescan(reason)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def check(self) -> str | None:
        """The root's fault as last probed (at most ROOT_CHECK_SEC old), None when healthy.
        No system call here: a hung NFS server must not block the event loop."""
        if self.fault is None and self.watcher is not None and self.watcher.faults:
            return sorted(self.watcher.faults)[0]
        return self.fault

    async def _probe(self, dev: int | None, was_mount: bool) -> str | None:
        # In a thread, abandoned on cancellation: stat() of a dead NFS mount may never return.
        return await trio.to_thread.run_sync(root_fault, self.root, dev, was_mount,
                                             abandon_on_cancel=True)

    async def _wait_fault(self) -> None:
        """Return once the root stops being healthy (polled: inotify says nothing about
        unmounts of NFS servers that vanish)."""
        while True:
            self.fault = await self._probe(self._dev, self._was_mount)
            if self.check() is not None:
                self.fault = self.check()
                return
            await trio.sleep(ROOT_CHECK_SEC)

    def stats(self) -> WatchStats:
        if self.watcher is None:
            return WatchStats(faults={self.fault} if self.fault else set())
        s = self.watcher.stats()
        if self.fault:
            s.faults.add(self.fault)
        return s

    # -------------------------------------------------------------- running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the root while it is healthy; when it is not, report the fault, wait for it
        to come back, rewatch and ask the pipes for a rescan."""
        started = False
        reported: str | None = None
        while True:
            # A root once seen as a mount point must be one again before it is trusted: the
            # empty directory under an unmounted share is not an empty share. The device may
            # change (a remount): it is adopted, and the pipes rescan.
            problem = await self._probe(None, self._was_mount)
            if problem is None:
                try:
                    dev, mounted = await trio.to_thread.run_sync(
                        _root_identity, self.root, abandon_on_cancel=True)
                    self._dev, self._was_mount = dev, self._was_mount or mounted
                except OSError:
                    problem = "root_missing"
            if problem is None:
                self.fault = None
                watcher = Watcher(self.root, self._emit, self._rescan, exclude=self.exclude,
                                  coalesce_sec=self.config.driver_params.coalesce_sec,
                                  workers=self.workers, limiter=self.limiter,
                                  watch_limit=self._watch_limit)
                self.watcher = watcher
                try:
                    with unwrap_group():
                        async with trio.open_nursery() as nursery:
                            await nursery.start(watcher.run)
                            if reported is not None:
                                log.info("source %s: root %s is back", self.config.id,
                                         self.root)
                                self._rescan("root_back")
                            reported = None
                            self._ready.set()
                            if not started:
                                task_status.started()
                                started = True
                            await self._wait_fault()
                            nursery.cancel_scope.cancel()
                    problem = self.fault
                except Exception as exc:
                    # Supervisor boundary (e.g. EMFILE from inotify_init1): report, retry.
                    log.exception("source %s: watcher failed; retrying", self.config.id)
                    problem = f"watcher_failed: {exc}"
                    self._rescan("watcher_failed")
                finally:
                    self.watcher = None
            self.fault = problem
            if problem != reported:
                log.warning("source %s: root %s: %s (retrying; nothing is reported as deleted)",
                            self.config.id, self.root, problem)
                reported = problem
            if not started:
                # Pipes start anyway: they report the fault and scan once the root is back.
                self._ready.set()
                task_status.started()
                started = True
            await trio.sleep(ROOT_CHECK_SEC)


def _root_identity(root: str) -> tuple[int, bool]:
    return os.stat(root).st_dev, is_mountpoint(root)


def is_mountpoint(path: str) -> bool:
    """True when `path` is a mount point, bind mounts of the same filesystem included
    (os.path.ismount misses those: same device, and the parent is a normal directory)."""
    if os.path.ismount(path):
        return True
    target = os.fsencode(os.path.realpath(path))
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split(b" ")
                if len(fields) > 4 and unescape_mountinfo(fields[4]) == target:
                    return True
    except OSError:
        pass
    return False


def hub_key(config: SourceConfig) -> tuple[object, ...]:
    """Two source configs with equal keys can share a hub."""
    return (os.path.realpath(config.uri), config.driver_params)

