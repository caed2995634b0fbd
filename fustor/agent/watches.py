"""The directories of one source as a tree of small nodes with their inotify watches.

A node is (parent, name, wd, kids), so moving a directory is O(1) and a path is rebuilt on
demand. Watches are installed by the parallel walk (watch first, then list). When the watch
quota is used up (ENOSPC) the most recently modified directories keep their watches: the
eviction order (a heap of mtimes) is only built once the limit is hit, since it costs memory
per directory. About 250 bytes per directory in all.

On filesystems where a directory's link count is 2 + its subdirectories (ext2/3/4, xfs,
tmpfs: the list GNU find's fts trusts too), a directory with 2 links is not listed by the
installation: it has no subdirectory to watch. On the bench tree that skips 96% of entries.
"""

from __future__ import annotations

import heapq
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from fustor.agent.inotify import Inotify, WatchLimitError
from fustor.agent.walk import Walker

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Filesystems whose directory link count is 2 + subdirectories (btrfs says 1, overlayfs says 1
# for merged directories, NFS and FUSE pass on whatever the server says).
_NLINK_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs"})


def fs_type(path: str) -> str | None:
    """The filesystem type of the mount holding `path` (/proc/self/mountinfo), None if unknown."""
    target = os.path.realpath(path)
    best, kind = -1, None
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                left, sep, right = line.partition(b" - ")
                fields = left.split(b" ")
                if not sep or len(fields) < 5:
                    continue
                mnt = os.fsdecode(unescape_mountinfo(fields[4]))
                inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= best:
                    best, kind = len(mnt), os.fsdecode(right.split(b" ", 1)[0])
    except OSError:
        return None
    return kind


def unescape_mountinfo(field: bytes) -> bytes:
    """A mountinfo path field: space, tab, newline and backslash are escaped as \\ooo."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


class Node:
    """A known directory. `wd` is None while it is not watched."""

    __slots__ = ("parent", "name", "wd", "kids")

    def __init__(self, parent: Node | None, name: str) -> None:
        self.parent = parent
        self.name = name
        self.wd: int | None = None
        self.kids: dict[str, Node] | None = None

    def path(self) -> str:
        parts: list[str] = []
        n: Node | None = self
        while n is not None and n.parent is not None:
            parts.append(n.name)
            n = n.parent
        return "/" + "/".join(reversed(parts))

    def child(self, name: str) -> Node:
        kids = self.kids
        if kids is None:
            kids = self.kids = {}
        node = kids.get(name)
        if node is None:
            node = kids[name] = Node(self, name)
        return node


@dataclass
class WatchStats:
    watched: int = 0
    directories: int = 0
    limited: bool = False
    faults: set[str] = field(default_factory=set)


class WatchTree:
    """Known directories of one source, their watches, and the watch budget."""

    def __init__(
        self,
        root: str,
        *,
        exclude: Callable[[str, str], bool],
        workers: int = 4,
        limiter: trio.CapacityLimiter | None = None,
        watch_limit: int | None = None,
    ) -> None:
        self.root = root.rstrip("/") or "/"
        self._exclude = exclude
        self._workers = workers
        self._limiter = limiter
        self.ino = Inotify(limit=watch_limit)
        self.top = Node(None, "")
        self.wd: dict[int, Node] = {}
        self.ndirs = 1
        self.limited = False
        self._heap: list[tuple[int, int]] = []   # (mtime ns, wd): eviction order when limited
        self._lock = threading.Lock()
        # The device whose directories' link counts tell their subdirectories (None: none).
        self._nlink_dev: int | None = None
        if fs_type(self.root) in _NLINK_FS:
            try:
                self._nlink_dev = os.stat(self.root).st_dev
            except OSError:
                pass

    def close(self) -> None:
        self.ino.close()

    def stats(self, faults: set[str]) -> WatchStats:
        return WatchStats(len(self.wd), self.ndirs, self.limited, set(faults))

    def local(self, path: str) -> str:
        return self.root if path == "/" else self.root + path

    def new_dirs(self, n: int) -> None:
        """Count directories found by a thread."""
        with self._lock:
            self.ndirs += n

    def ignored(self, wd: int) -> None:
        """The kernel dropped the watch `wd` (IN_IGNORED)."""
        self.ino.forget(wd)
        node = self.wd.pop(wd, None)
        if node is not None and node.wd == wd:
            node.wd = None

    async def install(self, top: Node | None = None) -> None:
        """Watch `top` and every directory below it (watch first, then list)."""
        walker: Walker[Node] = Walker(self._install_visit, _no_rows, workers=self._workers,
                                      limiter=self._limiter, chunk=1 << 30, probe=True)
        await walker.run([top or self.top])

    def _install_visit(self, node: Node, out: list[str]) -> list[Node]:
        path = node.path()
        local = self.local(path)
        try:
            fd = os.open(local, _DIR_FLAGS)
        except OSError:
            return []
        try:
            mtime = os.fstat(fd).st_mtime_ns
            self.watch(node, mtime, local)
            if self._nlink_dev is not None:
                # Stat again after the watch: a subdirectory made since then is an event.
                st = os.fstat(fd)
                if st.st_nlink == 2 and st.st_dev == self._nlink_dev:
                    return []
            subs: list[Node] = []
            new = 0
            prefix = "/" if path == "/" else path + "/"
            with os.scandir(fd) as it:
                for e in it:
                    try:
                        if not e.is_dir(follow_symlinks=False):
                            continue
                    except OSError:
                        continue
                    name = e.name
                    if self._exclude(name, prefix + name):
                        continue
                    if node.kids is None or name not in node.kids:
                        new += 1
                    subs.append(node.child(name))
            if new:
                with self._lock:
                    self.ndirs += new
            return subs
        except OSError:
            return []
        finally:
            os.close(fd)

    def watch(self, node: Node, mtime: int, local: str | None = None) -> None:
        """Add the watch of `node` (at `local`, its local path, when known); when the quota is
        used up, take it from the least recently modified watched directory if that one is
        older."""
        ino = self.ino
        assert ino is not None
        if local is None:
            local = self.local(node.path())
        wd: int | None
        try:
            wd = ino.add_watch(local)
        except WatchLimitError:
            wd = self._evict_for(local, mtime)
        except OSError:
            wd = None
        if wd is None:
            return
        node.wd = wd
        self.wd[wd] = node
        if self.limited and node.parent is not None:
            with self._lock:
                heapq.heappush(self._heap, (mtime, wd))

    def _evict_for(self, local: str, mtime: int) -> int | None:
        ino = self.ino
        assert ino is not None
        with self._lock:
            if not self.limited:
                self.limited = True
                log.warning("inotify watch limit reached under %s: watching the most recently "
                            "modified directories, audits cover the rest (raise "
                            "fs.inotify.max_user_watches)", self.root)
                # The eviction order is only kept once it is needed (it costs memory per
                # directory): built now from the watched directories' current mtimes.
                for w, n in list(self.wd.items()):
                    if n.parent is not None:
                        try:
                            self._heap.append((os.lstat(self.local(n.path())).st_mtime_ns, w))
                        except OSError:
                            continue
                heapq.heapify(self._heap)
            while self._heap:
                old_mtime, old_wd = self._heap[0]
                victim = self.wd.get(old_wd)
                if victim is None or victim.wd != old_wd:
                    heapq.heappop(self._heap)      # stale entry
                    continue
                if old_mtime >= mtime:
                    return None
                heapq.heappop(self._heap)
                ino.rm_watch(old_wd)
                victim.wd = None
                del self.wd[old_wd]
                try:
                    return ino.add_watch(local)
                except WatchLimitError:
                    continue     # another thread took the freed watch: evict the next one
                except OSError:
                    return None
            return None

    def unwatch(self, node: Node) -> None:
        """Forget `node` and everything below it (deleted or moved out)."""
        ino = self.ino
        stack = [node]
        while stack:
            n = stack.pop()
            self.ndirs -= 1
            if n.wd is not None:
                self.wd.pop(n.wd, None)
                if ino is not None:
                    ino.rm_watch(n.wd)
                n.wd = None
            if n.kids:
                stack.extend(n.kids.values())


async def _no_rows(rows_: list[str]) -> None:
    return None
