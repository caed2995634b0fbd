"""The inode table: view path ↔ inode number, with the kernel's lookup counts (sync).

An inode number is derived from (path, type) with the process's string hash, so a path keeps
its number for the whole life of the mount even after the kernel forgot it, and the table
only holds what the kernel currently references (memory follows the kernel's cache, not the
size of the view). A type change (file → dir) gives a new number, so the kernel never sees a
known inode change type. A hash collision with a live inode moves the newcomer to the next
free number (stable again once the colliding inode is forgotten; 63-bit space: rare).
"""

from __future__ import annotations

import pyfuse3

ROOT = int(pyfuse3.ROOT_INODE)
_MASK = (1 << 63) - 1
_SALT = {"file": 0, "dir": 0x5F3759DF5F3759DF, "symlink": 0x2545F4914F6CDD1D}


class Inode:
    __slots__ = ("path", "kind", "lookups")

    def __init__(self, path: str, kind: str, lookups: int) -> None:
        self.path = path
        self.kind = kind
        self.lookups = lookups


class InodeTable:
    """Live inodes only: by number, plus the few that a hash collision moved off their number
    (so they are found again while they live). No path index: the number is the index."""

    def __init__(self) -> None:
        self._by_ino: dict[int, Inode] = {ROOT: Inode("/", "dir", 1)}
        self._moved: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._by_ino)

    def get(self, ino: int) -> Inode | None:
        return self._by_ino.get(ino)

    def number(self, path: str, kind: str) -> int:
        """The inode number `path` has (or would get) as a `kind`; no reference is taken."""
        if path == "/":
            return ROOT
        by_ino = self._by_ino
        if self._moved:
            moved = self._moved.get((path, kind))
            if moved is not None:
                return moved
        ino = (hash(path) ^ _SALT[kind]) & _MASK
        while True:
            if ino > ROOT:
                node = by_ino.get(ino)
                if node is None or (node.path == path and node.kind == kind):
                    return ino
            ino = (ino + 1) & _MASK

    def ref(self, ino: int, path: str, kind: str) -> None:
        """The kernel got `ino` (lookup, readdirplus): count one more reference.
        `ino` must come from number() with no await in between."""
        node = self._by_ino.get(ino)
        if node is None:
            self._by_ino[ino] = Inode(path, kind, 1)
            if ino != (hash(path) ^ _SALT[kind]) & _MASK:
                self._moved[(path, kind)] = ino
        else:
            node.lookups += 1

    def remember(self, path: str, kind: str) -> int:
        ino = self.number(path, kind)
        self.ref(ino, path, kind)
        return ino

    def forget(self, ino: int, n: int) -> None:
        node = self._by_ino.get(ino)
        if node is None or ino == ROOT:
            return
        node.lookups -= n
        if node.lookups <= 0:
            del self._by_ino[ino]
            if self._moved:
                self._moved.pop((node.path, node.kind), None)
