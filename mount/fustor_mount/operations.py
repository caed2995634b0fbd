"""The read-only filesystem: pyfuse3 operations over a view, and the one place where failures
become errno values (`_errors`): FUSEError passes through, NotFoundError → ENOENT, Fusion
unreachable / 5xx / not ready / bad answers → EIO, a refused key → EACCES.
Content and writes: see readonly.py.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from fustor import paths
from fustor.errors import (
    AuthError,
    FustorError,
    NotFoundError,
    NotReadyError,
    ProtocolError,
    ScopeError,
    UnavailableError,
)
from fustor_mount.cache import TTLCache
from fustor_mount.client import ViewAPI
from fustor_mount.entries import (
    ENTRY_XATTRS,
    ROOT_XATTRS,
    Entry,
    negative_attributes,
    view_state_json,
)
from fustor_mount.finder import RealtimeFinder
from fustor_mount.inodes import ROOT, InodeTable
from fustor_mount.readonly import ReadOnlyOperations

log = logging.getLogger(__name__)

FUSEError = pyfuse3.FUSEError


@dataclass(frozen=True)
class CacheConfig:
    # How long answers are trusted (kernel + our caches): an entry's attributes, and a
    # directory's listing, for a tenth of the time since it last changed (its mtime), between
    # attr_timeout_min and attr_timeout; entries under integrity_suspect for the minimum.
    # NFS's rule for its attribute cache: a tree at rest is cached long (a second `find` is
    # served from memory), a file being written or a directory being filled is asked again
    # soon. attr_timeout_min = attr_timeout gives one fixed timeout.
    attr_timeout: float = 60.0
    attr_timeout_min: float = 3.0
    entry_timeout: float = 60.0  # at most this long for a name → entry answer
    negative_timeout: float = 2.0  # how long "no such name" is trusted (kernel + ours)
    dir_timeout: float = 60.0  # at most this long for a listing page
    page_size: int = 5000  # children per listing request
    # Walk readahead: a directory listed for the first time comes with the listings that
    # follow it in find's order (Fusion's walk), up to this many entries per request, so a
    # walk costs one request per few thousand entries instead of one per directory. The
    # window starts small (an `ls` pays little) and doubles while the walk goes on where
    # the previous answer ended. 0: one directory per request.
    prefetch_entries: int = 5000
    max_entries: int = 2_000_000  # bound on cached entries, each of attrs and listings (~0.7 kB each)
    stats_timeout: float = 5.0  # statfs and the root's view state


class _DirHandle:
    """An open directory: where each fetched page starts (index, cursor) for O(1) resume and
    seeks, and the page currently held (memory: one page, whatever the directory's size)."""

    __slots__ = ("path", "starts", "cursors", "k", "entries", "next_cursor")

    def __init__(self, path: str) -> None:
        self.path = path
        self.starts: list[int] = [0]
        self.cursors: list[str | None] = [None]
        self.k = -1  # index of the page held, -1: none yet
        self.entries: list[Entry] = []
        self.next_cursor: str | None = None


class FustorOperations(ReadOnlyOperations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self, client: ViewAPI, cfg: CacheConfig | None = None, *,
        finder: RealtimeFinder | None = None, clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.client = client
        self.cfg = cfg = cfg or CacheConfig()
        self.finder = finder
        self.inodes = InodeTable()
        self._clock = clock
        self._wall = wall
        self.attrs: TTLCache[str, Entry] = TTLCache(cfg.attr_timeout, cfg.max_entries, clock=clock)
        self.missing: TTLCache[str, bool] = TTLCache(cfg.negative_timeout, 100_000, clock=clock)
        self.pages: TTLCache[tuple[str, str | None], tuple[list[Entry], str | None]] = TTLCache(
            cfg.dir_timeout, cfg.max_entries, clock=clock
        )
        self._stats: TTLCache[str, dict[str, Any]] = TTLCache(cfg.stats_timeout, 4, clock=clock)
        self._dirs: dict[int, _DirHandle] = {}
        self._next_fh = 1
        self.meta: dict[str, Any] | None = None  # the last response meta (root xattrs)
        self._meta_at = float("-inf")
        self.partial: bool | None = None
        self._refused = False
        self._walk_next: str | None = None  # where the last walk answer ended
        self._window = min(WALK_START, cfg.prefetch_entries)
        # Walk answers fetched ahead, in the background, while the caller works through the
        # previous one: start → done event; and start of a fetched-ahead answer → where it
        # ends (when the walk reaches that start, the answer after it is fetched).
        self.nursery: trio.Nursery | None = None  # set by the runner; None: no fetching ahead
        self._ahead: dict[str, trio.Event] = {}
        self._chain: dict[str, str] = {}

    # ------------------------------------------------------------------ errno boundary
    @contextmanager
    def _errors(self, op: str, what: object) -> Iterator[None]:
        try:
            yield
        except FUSEError:
            raise
        except NotFoundError as exc:
            raise FUSEError(errno.ENOENT) from exc
        except (UnavailableError, NotReadyError) as exc:
            log.debug("%s %s: %s → EIO", op, what, exc)
            raise FUSEError(errno.EIO) from exc
        except (AuthError, ScopeError) as exc:
            if not self._refused:  # once, not once per request
                self._refused = True
                log.warning("%s %s: Fusion refused the key: %s → EACCES", op, what, exc)
            raise FUSEError(errno.EACCES) from exc
        except FustorError as exc:
            log.warning("%s %s: %s → EIO", op, what, exc)
            raise FUSEError(errno.EIO) from exc
        except Exception as exc:
            log.exception("%s %s failed → EIO", op, what)
            raise FUSEError(errno.EIO) from exc

    # ------------------------------------------------------------------ entries
    def _note_meta(self, meta: dict[str, Any]) -> None:
        if not meta:
            return
        self.meta = meta
        self._meta_at = self._clock()
        partial = bool(meta.get("partial"))
        if partial != self.partial:
            if partial:
                states = {p: (s or {}).get("state") for p, s in (meta.get("pipes") or {}).items()}
                log.warning("view %s is not ready %s: serving what it has (partial)",
                            self.client.view, states)
            elif self.partial is not None:
                log.info("view %s is ready", self.client.view)
            self.partial = partial

    def _node_path(self, inode: int) -> tuple[str, str]:
        node = self.inodes.get(inode)
        if node is None:
            raise FUSEError(errno.ESTALE)
        return node.path, node.kind

    async def _entry(self, path: str, *, find_in: str | None = None) -> Entry | None:
        """The entry at `path` (cache, then Fusion, then a realtime find of `find_in`), or None."""
        e = self.attrs.get(path)
        if e is not None:
            return e
        if self.missing.get(path):
            return None
        try:
            node, meta = await self.client.metadata(path)
        except NotFoundError:
            found = None
            if find_in is not None and self.finder is not None:
                found = await self.finder.find(find_in, path)
            if found is None:
                if path == paths.ROOT:
                    return _EMPTY_ROOT  # an empty view still has its root
                self.missing.put(path, True)
                return None
            node, meta = found
        self._note_meta(meta)
        e = Entry.from_json(node)
        e.path = e.path or path
        return self._remember(e, self._wall())

    def _trust(self, e: Entry, now: float) -> None:
        cfg = self.cfg
        least = min(cfg.attr_timeout_min, cfg.attr_timeout)
        if e.suspect:
            e.ttl = least
        else:
            e.ttl = min(cfg.attr_timeout, max(least, (now - e.mtime_ns * 1e-9) * 0.1))

    def _remember(self, e: Entry, now: float) -> Entry:
        """Cache one entry (a directory's own entry, or a metadata answer)."""
        self._trust(e, now)
        self.attrs.put(e.path, e, ttl=e.ttl)
        return e

    def _attributes(self, e: Entry, ino: int) -> pyfuse3.EntryAttributes:
        return e.attributes(ino, self.cfg.entry_timeout)

    # ------------------------------------------------------------------ metadata ops
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._errors("lookup", name):
            parent, _ = self._node_path(parent_inode)
            if name == b".":
                path = parent
            elif name == b"..":
                path = paths.split(parent)[0]
            else:
                path = paths.join(parent, os.fsdecode(name))
            e = await self._entry(path, find_in=parent if path != parent and name != b".." else None)
            if e is None:
                if self.cfg.negative_timeout > 0:
                    return negative_attributes(self.cfg.negative_timeout)
                raise FUSEError(errno.ENOENT)
            ino = self.inodes.remember(path, e.kind)
            return self._attributes(e, ino)

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

    async def getattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        with self._errors("getattr", inode):
            path, kind = self._node_path(inode)
            e = await self._entry(path)
            if e is None or e.kind != kind:
                raise FUSEError(errno.ENOENT)  # gone, or replaced by another type
            return self._attributes(e, inode)

    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileNameT:
        with self._errors("readlink", inode):
            path, _ = self._node_path(inode)
            e = await self._entry(path)
            if e is None:
                raise FUSEError(errno.ENOENT)
            if e.kind != "symlink" or e.target is None:
                raise FUSEError(errno.EINVAL)
            return pyfuse3.FileNameT(os.fsencode(e.target))

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        with self._errors("statfs", "/"):
            st = self._stats.get("stats")
            if st is None:
                st = await self.client.stats()
                self._stats.put("stats", st)
            s = pyfuse3.StatvfsData()
            s.f_bsize = s.f_frsize = 4096
            s.f_blocks = (int(st.get("total_size") or 0) + 4095) // 4096
            s.f_bfree = s.f_bavail = 0
            s.f_files = int(st.get("entries") or 0)
            s.f_ffree = s.f_favail = 0
            s.f_namemax = 255
            return s

    # ------------------------------------------------------------------ directories
    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        with self._errors("opendir", inode):
            path, kind = self._node_path(inode)
            if kind != "dir":
                raise FUSEError(errno.ENOTDIR)
            fh = self._next_fh
            self._next_fh += 1
            self._dirs[fh] = _DirHandle(path)
            return pyfuse3.FileHandleT(fh)

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._dirs.pop(fh, None)

    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Offsets are positions in the listing (entry i has next_id i + 1); the handle knows
        which page holds a position, so resuming costs no request or one page request."""
        h = self._dirs.get(fh)
        if h is None:
            raise FUSEError(errno.EBADF)
        with self._errors("readdir", h.path):
            live = self.inodes.get
            number = self.inodes.number
            ref = self.inodes.ref
            reply = pyfuse3.readdir_reply
            et = self.cfg.entry_timeout
            pos = start_id
            while True:
                if not await self._hold_page(h, pos):
                    return
                base = h.starts[h.k]
                entries = h.entries
                for i in range(pos - base, len(entries)):
                    e = entries[i]
                    name = e.name.encode("utf-8", "surrogateescape")  # os.fsencode, inlined
                    # Fast path (a walk seen before): the kernel still holds this entry's inode.
                    a = e._attr
                    if a is not None:
                        node = live(a.st_ino)
                        if node is not None and node.path == e.path and node.kind == e.kind:
                            if not reply(token, name, a, base + i + 1):
                                return
                            node.lookups += 1
                            continue
                    ino = number(e.path, e.kind)
                    if not reply(token, name, e.attributes(ino, et), base + i + 1):
                        return
                    ref(ino, e.path, e.kind)  # readdirplus counts as a lookup, once accepted
                pos = base + len(entries)

    async def _hold_page(self, h: _DirHandle, pos: int) -> bool:
        """Make `h` hold the page containing position `pos`; False at the end of the listing."""
        while True:
            k = bisect.bisect_right(h.starts, pos) - 1
            if k == h.k:
                if pos < h.starts[k] + len(h.entries):
                    return True
                if h.next_cursor is None or not h.entries:
                    return False
                # The next page starts where this one ends (boundaries known beyond it came
                # from an older listing of a changed directory: forget them).
                del h.starts[k + 1 :], h.cursors[k + 1 :]
                h.starts.append(h.starts[k] + len(h.entries))
                h.cursors.append(h.next_cursor)
                k += 1
            entries, nxt = await self._page(h.path, h.cursors[k])
            h.k, h.entries, h.next_cursor = k, entries, nxt
            if pos < h.starts[k] + len(entries) or nxt is None or not entries:
                return pos < h.starts[k] + len(entries)

    async def _page(self, path: str, cursor: str | None) -> tuple[list[Entry], str | None]:
        """One listing page (one request, or the listing cache); its children's attributes go
        into the attribute cache so lookups and getattr that follow need no request. A first
        page comes from a walk when walk readahead is on."""
        cached = self.pages.get((path, cursor))
        if cached is None and cursor is None and path in self._ahead:
            await self._ahead[path].wait()
            cached = self.pages.get((path, cursor))
        if cached is not None:
            if self._chain and cursor is None and path in self._chain:
                self._fetch_ahead(self._chain.pop(path))
            return cached
        if cursor is None and self.cfg.prefetch_entries > 0:
            sequential = path == self._walk_next
            entries = await self._walk(path)
            if entries is not None:
                if sequential and self._walk_next is not None:
                    self._fetch_ahead(self._walk_next)  # a walk is going on: keep ahead of it
                return entries, None
        page = await self.client.list_page(path, self.cfg.page_size, cursor)
        self._note_meta(page.meta)
        d = self._remember(Entry.from_json(page.entry), self._wall())
        return self._listing(d, path, cursor, page.children, page.next_cursor), page.next_cursor

    def _fetch_ahead(self, start: str) -> None:
        if self.nursery is None or start in self._ahead or self.pages.get((start, None)):
            return
        self._ahead[start] = done = trio.Event()
        self.nursery.start_soon(self._walk_ahead, start, done)

    async def _walk_ahead(self, start: str, done: trio.Event) -> None:
        try:
            with self._errors("walk ahead", start):
                await self._walk(start)
                if self._walk_next is not None:
                    if len(self._chain) > 64:  # walks abandoned before reaching their start
                        self._chain.clear()
                    self._chain[start] = self._walk_next
        except FUSEError:
            pass  # logged by _errors; the walk asks again when it gets there
        finally:
            del self._ahead[start]
            done.set()

    async def _walk(self, path: str) -> list[Entry] | None:
        """`path`'s whole listing and those after it in walk order, all cached; None when the
        directory is too big for one walk answer (it is paged instead)."""
        most = self.cfg.prefetch_entries
        self._window = min(self._window * 2, most) if path == self._walk_next else min(WALK_START, most)
        known = self.attrs.get(path)
        if known is not None and (known.child_count or 0) > most:
            return None
        try:
            w = await self.client.walk(path, max(self._window, known.child_count or 0)
                                       if known is not None else self._window)
        except (ProtocolError, NotFoundError):
            # Grew past the budget since we last saw it, or gone: the plain listing says
            # which (and a Fusion without walks still serves plain listings).
            return None
        self._note_meta(w.meta)
        first: list[Entry] | None = None
        now = self._wall()
        for entry, children in w.listings:
            e = Entry.from_json(entry)
            e.path = e.path or path
            self._remember(e, now)
            entries = self._listing(e, e.path, None, children, None)
            if first is None:
                first = entries
        self._walk_next = w.next
        return first

    def _listing(self, d: Entry, path: str, cursor: str | None, children: list[Any],
                 next_cursor: str | None) -> list[Entry]:
        """Parse and cache one listing page of `path` (entries and the page itself, which is
        trusted as long as the directory's own entry `d`)."""
        entries = [Entry.from_json(c) for c in children]
        join = paths.join
        trust = self._trust
        now = self._wall()
        for e in entries:
            if not e.path:  # Fusion sends it; a path from elsewhere would still work
                e.path = join(path, e.name)
            trust(e, now)
        self.attrs.put_many([(e.path, e) for e in entries], [e.ttl for e in entries])
        self.pages.put((path, cursor), (entries, next_cursor), max(1, len(entries)), ttl=d.ttl)
        return entries

    # ------------------------------------------------------------------ xattrs
    async def listxattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> Sequence[pyfuse3.XAttrNameT]:
        with self._errors("listxattr", inode):
            self._node_path(inode)  # the names are the same for every entry: no request
            names = ENTRY_XATTRS + ROOT_XATTRS if inode == ROOT else ENTRY_XATTRS
            return [pyfuse3.XAttrNameT(n) for n in names]

    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        with self._errors("getxattr", inode):
            path, _ = self._node_path(inode)
            if name not in ENTRY_XATTRS and not (inode == ROOT and name in ROOT_XATTRS):
                # Only the user namespace exists here. EOPNOTSUPP (not ENODATA) for the others
                # lets ls -l remember per device that there are no SELinux labels or ACLs,
                # instead of asking twice for every file it lists.
                raise FUSEError(pyfuse3.ENOATTR if name.startswith(b"user.") else errno.EOPNOTSUPP)
            if name == b"user.fustor.view":
                return self.client.view.encode()
            if name == b"user.fustor.pipes":
                if self._clock() - self._meta_at >= self.cfg.stats_timeout:
                    _, meta = await self.client.metadata(paths.ROOT)
                    self._note_meta(meta)
                return view_state_json(self.meta)
            e = await self._entry(path)
            if e is None:
                raise FUSEError(errno.ENOENT)
            value = e.xattr(name)
            assert value is not None
            return value

# The root of a view that holds nothing yet (no pipe has sent its root).
_EMPTY_ROOT = Entry("", "dir", mode=0o555)
WALK_START = 1000  # entries in the first walk answer of a new walk
