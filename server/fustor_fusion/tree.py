"""The compact in-memory tree of one pipe: entries, structure primitives and running counters.

Memory is the constraint (10 M entries per source): a file is one `bytes` record (attributes
packed with `REC`) stored directly as the value of its parent's `children` dict, keyed by name;
only directories (`Dir`) and symlinks (`Link`) are objects. Records are not tracked by the GC.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Final

from fustor.protocol import DIR, FILE, SYMLINK, Attrs

# size, mtime, ctime, mode, uid, gid, confirmed_at (Fusion time of the last realtime fact, 0:
# never), flags. Little-endian, unpadded: 43 bytes (an 80-byte allocation with the header).
REC: Final = struct.Struct("<qddHIIdB")
F_PLACEHOLDER: Final = 1      # a directory created implicitly for a child; attributes unknown
I_SIZE, I_MTIME, I_CTIME, I_MODE, I_UID, I_GID, I_CONFIRMED, I_FLAGS = range(8)

_pack = REC.pack
_unpack = REC.unpack
_MTIME_AT_8 = struct.Struct("<d").unpack_from     # REC's mtime: after the 8-byte size
_SIZE_AT_0 = struct.Struct("<q").unpack_from      # REC's size: its first field
PLACEHOLDER_REC: Final = _pack(0, 0.0, 0.0, 0o755, 0, 0, 0.0, F_PLACEHOLDER)


class Dir:
    """A directory: its record and children (name → bytes | Link | Dir).

    `names` caches the sorted child names for paging; `pending` and `gone` collect the names
    added and removed since, so a refresh after a few changes costs a few bisects, and after
    many a linear filter plus a sort of one sorted run and a short tail - never a full resort.
    """

    __slots__ = ("rec", "children", "names", "pending", "gone")

    def __init__(self, rec: bytes) -> None:
        self.rec = rec
        self.children: dict[str, Node] = {}
        self.names: list[str] | None = None
        self.pending: list[str] | None = None
        self.gone: list[str] | None = None

    def added(self, name: str) -> None:
        if self.names is not None:
            if self.pending is None:
                self.pending = []
            self.pending.append(name)
            self._bound(self.pending)

    def removed(self, name: str) -> None:
        if self.names is not None:
            if self.gone is None:
                self.gone = []
            self.gone.append(name)
            self._bound(self.gone)

    def _bound(self, log: list[str]) -> None:
        if len(log) > 1024 and len(log) * 4 > len(self.names or ()):
            self.names = self.pending = self.gone = None     # cheaper to sort from scratch

    def sorted_names(self) -> list[str]:
        names = self.names
        pending, gone, ch = self.pending, self.gone, self.children
        if names is None:
            names = sorted(ch)
        elif len(pending or ()) + len(gone or ()) <= 256:
            for n in gone or ():
                i = bisect_left(names, n)
                if i < len(names) and names[i] == n and n not in ch:
                    del names[i]
            for n in pending or ():
                if n in ch:
                    i = bisect_left(names, n)
                    if i == len(names) or names[i] != n:
                        names.insert(i, n)
        else:
            if gone:
                names = [n for n in names if n in ch]
            # without removals a pending name is new; with them it may have come back
            extra = {n for n in pending or () if n in ch}
            if gone:
                extra.difference_update(names)
            names.extend(extra)
            names.sort()             # timsort: one sorted run plus a short tail
        self.names, self.pending, self.gone = names, None, None
        return names


class Link:
    __slots__ = ("rec", "target")

    def __init__(self, rec: bytes, target: str) -> None:
        self.rec = rec
        self.target = target


Node = bytes | Link | Dir
Observer = Callable[[str, "Node | None", "Node | None"], None]


def rec_of(node: Node) -> bytes:
    return node if type(node) is bytes else node.rec  # type: ignore[union-attr]


def type_of(node: Node) -> str:
    t = type(node)
    return FILE if t is bytes else DIR if t is Dir else SYMLINK


def pack_attrs(a: Attrs, confirmed: float, flags: int = 0) -> bytes:
    return _pack(a.size, a.mtime, a.ctime, a.mode, a.uid, a.gid, confirmed, flags)


def make_node(a: Attrs, confirmed: float) -> Node:
    rec = _pack(a.size, a.mtime, a.ctime, a.mode, a.uid, a.gid, confirmed, 0)
    if a.type == FILE:
        return rec
    if a.type == DIR:
        return Dir(rec)
    return Link(rec, a.target or "")


def flags_of(rec: bytes) -> int:
    return rec[-1]                   # the last field of REC, one byte


def mtime_of_rec(rec: bytes) -> float:
    return _MTIME_AT_8(rec, 8)[0]  # type: ignore[no-any-return]


def mtime_of(node: Node) -> float:
    return REC.unpack_from(rec_of(node))[I_MTIME]  # type: ignore[no-any-return]


def parent_of(path: str) -> tuple[str, str]:
    i = path.rfind("/")
    return (path[:i] or "/"), path[i + 1:]


def child_path(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else parent + "/" + name


class Tree:
    """Structure and counters of one pipe's tree. Every mutation goes through these methods,
    which keep `files`, `dirs`, `total_size` exact and tell the observer (the view's union
    counters) about every path whose value appears, changes or disappears."""

    def __init__(self) -> None:
        self.root = Dir(PLACEHOLDER_REC)
        self.files = 0          # files and symlinks
        self.dirs = 0           # directories, the root excluded
        self.total_size = 0
        self.observer: Observer | None = None
        # one-entry cache of the last parent looked up: scans send siblings together
        self._cache_path = "/"
        self._cache_dir: Dir | None = self.root

    @property
    def entries(self) -> int:
        return self.files + self.dirs

    # ------------------------------------------------------------------ lookup
    def get(self, path: str) -> Node | None:
        if path == "/":
            return self.root
        head, name = parent_of(path)
        d = self.get_dir(head)
        return None if d is None else d.children.get(name)

    def get_dir(self, path: str) -> Dir | None:
        if path == self._cache_path and self._cache_dir is not None:
            return self._cache_dir
        node: Node | None = self.root
        if path != "/":
            for part in path[1:].split("/"):
                if type(node) is not Dir:
                    return None
                node = node.children.get(part)
        if type(node) is not Dir:
            return None
        self._cache_path, self._cache_dir = path, node
        return node

    def ensure_dir(self, path: str, confirmed: float = 0.0) -> Dir:
        """The directory at `path`, creating missing ancestors as placeholders (confirmed at
        `confirmed`: a realtime fact protects them from a running scan's missing-item check).
        A non-directory in the way is replaced: the caller's fact says a directory is there."""
        d = self.get_dir(path)
        if d is not None:
            return d
        ph = _pack(0, 0.0, 0.0, 0o755, 0, 0, confirmed, F_PLACEHOLDER)
        d = self.root
        cur = "/"
        for part in path[1:].split("/"):
            cur = child_path(cur, part)
            nxt = d.children.get(part)
            if type(nxt) is not Dir:
                if nxt is not None:
                    self._drop(d, cur, part, nxt)
                nxt = Dir(ph)
                self._add(d, cur, part, nxt)
            d = nxt
        self._cache_path, self._cache_dir = path, d
        return d

    # ------------------------------------------------------------------ mutation
    def put(self, parent: Dir, path: str, name: str, new: Node) -> Node | None:
        """Set `parent/name` to `new`; returns the old value. A directory keeps its children
        when its record changes; any type change drops the old subtree."""
        old = parent.children.get(name)
        if old is None:
            self._add(parent, path, name, new)
        elif type(old) is Dir and type(new) is Dir:
            old.rec = new.rec
        elif type(old) is not Dir and type(new) is not Dir:
            parent.children[name] = new
            if type(old) is bytes:
                self.total_size -= REC.unpack_from(old)[I_SIZE]
            if type(new) is bytes:
                self.total_size += REC.unpack_from(new)[I_SIZE]
            if self.observer is not None:
                self.observer(path, old, new)
        else:
            self._drop(parent, path, name, old)
            self._add(parent, path, name, new)
        return old

    def remove(self, path: str) -> Node | None:
        """Remove the entry at `path` and its subtree; returns it (None if absent)."""
        if path == "/":
            return None
        head, name = parent_of(path)
        d = self.get_dir(head)
        if d is None:
            return None
        old = d.children.get(name)
        if old is not None:
            self._drop(d, path, name, old)
        return old

    def detach(self, path: str) -> Node | None:
        """Take `path` (and its subtree) out of the tree for a move; counters follow."""
        return self.remove(path)

    def attach(self, path: str, node: Node, confirmed: float = 0.0) -> None:
        head, name = parent_of(path)
        self.put(self.ensure_dir(head, confirmed), path, name, node)

    def _add(self, parent: Dir, path: str, name: str, node: Node) -> None:
        parent.children[name] = node
        if parent.names is not None:         # (a snapshot fills directories never listed)
            parent.added(name)
        if type(node) is bytes:              # a file: the bulk of every snapshot, kept cheap
            self.files += 1
            self.total_size += _SIZE_AT_0(node)[0]
            if self.observer is not None:
                self.observer(path, None, node)
        else:
            self._count(path, node, +1)

    def _drop(self, parent: Dir, path: str, name: str, node: Node) -> None:
        del parent.children[name]
        parent.removed(name)
        self._count(path, node, -1)
        if type(node) is Dir:
            self._cache_path, self._cache_dir = "", None

    def _count(self, path: str, node: Node, sign: int) -> None:
        # iterative: a subtree may be deeper than Python's recursion limit
        obs = self.observer
        files = dirs = size = 0
        unpack_from = REC.unpack_from
        stack: list[tuple[str, Node]] = [(path, node)]
        while stack:
            p, n = stack.pop()
            t = type(n)
            if t is bytes:
                files += 1
                size += unpack_from(n)[I_SIZE]  # type: ignore[arg-type]
            elif t is Link:
                files += 1
            else:
                dirs += 1
                ch = n.children  # type: ignore[union-attr]
                if ch:
                    if obs is None:
                        stack.extend((p, c) for c in ch.values())
                    else:
                        stack.extend((child_path(p, k), c) for k, c in ch.items())
            if obs is not None:
                if sign > 0:
                    obs(p, None, n)
                else:
                    obs(p, n, None)
        self.files += sign * files
        self.dirs += sign * dirs
        self.total_size += sign * size

    # ------------------------------------------------------------------ walking
    def walk(self, path: str, node: Node) -> Iterator[tuple[str, Node]]:
        """(path, node) for `node` and everything below it, parents first."""
        stack = [(path, node)]
        while stack:
            p, n = stack.pop()
            yield p, n
            if type(n) is Dir:
                stack.extend((child_path(p, k), v) for k, v in n.children.items())
