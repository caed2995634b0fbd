"""inotify on every directory of a source, turned into realtime rows (docs/PROTOCOL.md).

Driven from trio: `wait_readable(fd)`, read everything queued, map the batch to rows, then
report each touched directory's fresh attributes once (rule 0); the lstat()s of a batch run in
one worker thread, so a hung NFS server stalls only the watcher, not heartbeats or polls. A new directory is watched
before it is listed, so files created right after `mkdir -p a/b/c` are not missed. Moves are
paired by cookie (MOVED_FROM is always queued right before its MOVED_TO); an unpaired
MOVED_FROM left the tree (Delete), an unpaired MOVED_TO came in (upsert of the subtree).
The directories and their watches live in a WatchTree (watches.py): moving a directory is
O(1); when the watch quota is used up, the most recently modified directories keep their
watches and the rest is left to audits; coverage is reported, the watcher never stops.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from typing import NamedTuple

import trio

from fustor.agent import rows
from fustor.agent.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    RawEvent,
)
from fustor.agent.scanner import compile_excludes
from fustor.agent.walk import Sink, Walker
from fustor.agent.watches import Node, WatchStats, WatchTree

__all__ = ["Watcher", "WatchStats"]

log = logging.getLogger(__name__)


class _Stat(NamedTuple):
    """An upsert row still to be stat'ed."""

    path: str
    write: str | None
    created: bool
    moved_in: bool


Pending = list[str | _Stat]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PAIR_WAIT = 0.05  # how long an unpaired MOVED_FROM at the end of a read waits for its pair


class Watcher:
    """Watches `root`; calls `emit(rows)` with realtime rows and `rescan(reason)` when events
    were lost (queue overflow)."""

    def __init__(
        self,
        root: str,
        emit: Callable[[list[str]], None],
        rescan: Callable[[str], None],
        *,
        exclude: Callable[[str, str], bool] | None = None,
        coalesce_sec: float = 0.2,
        workers: int = 4,
        limiter: trio.CapacityLimiter | None = None,
        watch_limit: int | None = None,
    ) -> None:
        self.root = root.rstrip("/") or "/"
        self._emit = emit
        self._rescan = rescan
        self._exclude = exclude or compile_excludes(())
        self._coalesce = coalesce_sec
        self._workers = workers
        self._limiter = limiter
        self._watch_limit = watch_limit
        self._tree: WatchTree | None = None
        self._pending: dict[str, float] = {}      # path → when its "progress" row is due
        self._pending_changed = trio.Event()
        self._emitting = trio.Lock()   # rows leave in the order their events were handled
        self.faults: set[str] = set()
        self.events_seen = 0

    # ------------------------------------------------------------------ status
    def stats(self) -> WatchStats:
        if self._tree is None:
            return WatchStats(faults=set(self.faults))
        return self._tree.stats(self.faults)

    def _local(self, path: str) -> str:
        return self.root if path == "/" else self.root + path

    @property
    def tree(self) -> WatchTree:
        assert self._tree is not None, "the watcher is not running"
        return self._tree

    # ------------------------------------------------------------------ running
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Install the watches on the whole tree, report started, then map events forever."""
        self._tree = tree = WatchTree(self.root, exclude=self._exclude, workers=self._workers,
                                      limiter=self._limiter, watch_limit=self._watch_limit)
        ino = tree.ino
        try:
            t0 = time.monotonic()
            await tree.install()
            if tree.top.wd is None:
                self.faults.add("root_missing")
            log.info("watching %s: %d of %d directories (%.1f s)", self.root, len(tree.wd),
                     tree.ndirs, time.monotonic() - t0)
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._flush_progress_forever)
                while True:
                    await trio.lowlevel.wait_readable(ino.fd)
                    await self.handle(ino.read())
        finally:
            tree.close()
            self._tree = None

    # ------------------------------------------------------------------ events
    async def handle(self, events: list[RawEvent]) -> None:
        """Map one read's events to rows and emit them (public for tests: inject events)."""
        out: Pending = []
        touched: dict[int, Node] = {}
        i = 0
        while i < len(events):
            ev = events[i]
            i += 1
            self.events_seen += 1
            if ev.mask & IN_MOVED_FROM:
                if i == len(events) and self._tree is not None:
                    # Its MOVED_TO may sit in the next read: wait briefly for it.
                    with trio.move_on_after(_PAIR_WAIT):
                        await trio.lowlevel.wait_readable(self._tree.ino.fd)
                    events.extend(self._tree.ino.read())
                nxt = events[i] if i < len(events) else None
                if nxt is not None and nxt.mask & IN_MOVED_TO and nxt.cookie == ev.cookie:
                    i += 1
                    self.events_seen += 1
                    await self._moved(ev, nxt, out, touched)
                else:
                    self._moved_out(ev, out, touched)
                continue
            await self._one(ev, out, touched)
        for node in touched.values():
            self._upsert(node.path(), out)
        if out:
            async with self._emitting:
                self._emit(await trio.to_thread.run_sync(self._resolve, out))

    async def _one(self, ev: RawEvent, out: Pending, touched: dict[int, Node]) -> None:
        mask = ev.mask
        if mask & IN_Q_OVERFLOW:
            log.warning("inotify queue overflowed under %s: events were lost, rescanning",
                        self.root)
            self._rescan("overflow")
            await self.tree.install()   # pick up directories created meanwhile
            return
        node = self.tree.wd.get(ev.wd)
        if mask & IN_IGNORED:
            self.tree.ignored(ev.wd)
            return
        if node is None:
            return
        if not ev.name:
            self._self_event(node, mask, out)
            return
        name = os.fsdecode(ev.name)
        parent_path = node.path()
        path = "/" + name if parent_path == "/" else f"{parent_path}/{name}"
        if self._exclude(name, path):
            return
        isdir = bool(mask & IN_ISDIR)
        if mask & (IN_CREATE | IN_MOVED_TO):
            touched[id(node)] = node
            if isdir:
                await self._new_dir(node, name, out, moved_in=bool(mask & IN_MOVED_TO))
            else:
                self._upsert(path, out, created=True, moved_in=bool(mask & IN_MOVED_TO))
        elif mask & IN_DELETE:
            touched[id(node)] = node
            self._pending.pop(path, None)
            out.append(rows.delete(path))
            if isdir and node.kids and name in node.kids:
                self.tree.unwatch(node.kids.pop(name))
        elif mask & IN_CLOSE_WRITE:
            self._pending.pop(path, None)
            self._upsert(path, out, write="complete")
        elif mask & IN_MODIFY:
            if self._coalesce <= 0:
                self._upsert(path, out, write="progress")
            elif path not in self._pending:
                self._pending[path] = trio.current_time() + self._coalesce
                self._pending_changed.set()
        elif mask & IN_ATTRIB:
            self._upsert(path, out)

    def _self_event(self, node: Node, mask: int, out: Pending) -> None:
        if node.parent is not None:
            return   # the parent's watch reports what happens to this directory
        if mask & IN_ATTRIB:
            self._upsert("/", out)
        elif mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
            fault = ("root_unmounted" if mask & IN_UNMOUNT
                     else "root_deleted" if mask & IN_DELETE_SELF else "root_moved")
            if fault not in self.faults:
                log.warning("source root %s: %s", self.root, fault)
            self.faults.add(fault)

    async def _moved(self, src: RawEvent, dst: RawEvent, out: Pending,
                     touched: dict[int, Node]) -> None:
        sp, dp = self.tree.wd.get(src.wd), self.tree.wd.get(dst.wd)
        if sp is None:
            if dp is not None:
                await self._one(dst, out, touched)
            return
        if dp is None:
            self._moved_out(src, out, touched)
            return
        sname, dname = os.fsdecode(src.name), os.fsdecode(dst.name)
        spath = _join(sp.path(), sname)
        dpath = _join(dp.path(), dname)
        s_ex, d_ex = self._exclude(sname, spath), self._exclude(dname, dpath)
        if s_ex and d_ex:
            return
        if d_ex:
            self._moved_out(src, out, touched)
            return
        if s_ex:
            await self._one(dst, out, touched)
            return
        touched[id(sp)] = sp
        touched[id(dp)] = dp
        for p in [p for p in self._pending if p == spath or p.startswith(spath + "/")]:
            del self._pending[p]
        out.append(rows.move(spath, dpath))
        if src.mask & IN_ISDIR:
            node = sp.kids.pop(sname, None) if sp.kids else None
            if node is None:
                await self._new_dir(dp, dname, out, moved_in=True)
                return
            if dp.kids and dname in dp.kids:
                self.tree.unwatch(dp.kids.pop(dname))   # replaced an (empty) directory
            node.parent, node.name = dp, dname
            if dp.kids is None:
                dp.kids = {}
            dp.kids[dname] = node
            self._upsert(dpath, out)
        else:
            self._upsert(dpath, out, write="complete")

    def _moved_out(self, ev: RawEvent, out: Pending, touched: dict[int, Node]) -> None:
        node = self.tree.wd.get(ev.wd)
        if node is None:
            return
        name = os.fsdecode(ev.name)
        path = _join(node.path(), name)
        if self._exclude(name, path):
            return
        touched[id(node)] = node
        for p in [p for p in self._pending if p == path or p.startswith(path + "/")]:
            del self._pending[p]
        out.append(rows.delete(path))
        if ev.mask & IN_ISDIR and node.kids and name in node.kids:
            self.tree.unwatch(node.kids.pop(name))

    async def _new_dir(self, parent: Node, name: str, out: Pending, *, moved_in: bool) -> None:
        """A directory appeared: watch it first, then report it and everything inside."""
        if parent.kids is None or name not in parent.kids:
            self.tree.new_dirs(1)
        node = parent.child(name)
        write = "complete" if moved_in else None
        found: list[str] = []
        walker: Walker[Node] = Walker(
            lambda n, o: self._new_visit(n, o, write), _collect(found), workers=1,
            limiter=self._limiter, chunk=4096)
        await walker.run([node])
        out.extend(found)

    def _new_visit(self, node: Node, out: list[str], write: str | None) -> list[Node]:
        path = node.path()
        try:
            fd = os.open(self._local(path), _DIR_FLAGS)
        except OSError:
            return []
        subs: list[Node] = []
        try:
            st = os.fstat(fd)
            if node.wd is None:
                self.tree.watch(node, st.st_mtime_ns)
            out.append(rows.upsert(path, st))
            with os.scandir(fd) as it:
                for e in it:
                    name = e.name
                    p = _join(path, name)
                    if self._exclude(name, p):
                        continue
                    try:
                        est = e.stat(follow_symlinks=False)
                        target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(est.st_mode) else None
                    except OSError:
                        continue
                    if stat.S_ISDIR(est.st_mode):
                        if node.kids is None or name not in node.kids:
                            self.tree.new_dirs(1)
                        subs.append(node.child(name))   # its own visit reports it, watched
                    else:
                        w = write if stat.S_ISREG(est.st_mode) else None
                        out.append(rows.upsert(p, est, target=target, write=w))
        except OSError:
            pass
        finally:
            os.close(fd)
        return subs

    def _upsert(self, path: str, out: Pending, *, write: str | None = None,
                created: bool = False, moved_in: bool = False) -> None:
        """Ask for an upsert of `path` with its attributes as they are when the batch's rows
        are resolved (lstat in a thread: a hung NFS server must not stall the event loop)."""
        out.append(_Stat(path, write, created, moved_in))

    def _resolve(self, out: Pending) -> list[str]:
        """The batch's rows, in order, stat'ing what needs it (runs in a thread)."""
        done: list[str] = []
        for item in out:
            if isinstance(item, str):
                done.append(item)
                continue
            path, write, created, moved_in = item
            local = self._local(path)
            try:
                st = os.lstat(local)
                target = os.readlink(local) if stat.S_ISLNK(st.st_mode) else None
            except OSError:
                continue   # gone again: its delete event follows
            if (created or moved_in) and stat.S_ISREG(st.st_mode):
                # Created empty or renamed into place: complete. Created with data already in
                # it: still being written; its close_write completes it.
                write = "complete" if moved_in or st.st_size == 0 else "progress"
            done.append(rows.upsert(path, st, target=target, write=write))
        return done

    async def _flush_progress_forever(self) -> None:
        while True:
            if not self._pending:
                await self._pending_changed.wait()
                self._pending_changed = trio.Event()
                continue
            # Under the emit lock: a "progress" row popped here must not overtake (or be
            # overtaken by) the "complete" row of a close handled meanwhile.
            async with self._emitting:
                now = trio.current_time()
                out: Pending = []
                for p in [p for p, t in self._pending.items() if t <= now]:
                    del self._pending[p]
                    self._upsert(p, out, write="progress")
                if out:
                    self._emit(await trio.to_thread.run_sync(self._resolve, out))
            if self._pending:
                await trio.sleep_until(min(self._pending.values()))


def _join(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else f"{parent}/{name}"


def _collect(into: list[str]) -> Sink:
    async def sink(batch: list[str]) -> None:
        into.extend(batch)
    return sink
