"""Incremental audits (DESIGN §6.10–11): the leader's memory of directory mtimes.

After an audit lists a directory completely it remembers `(mtime, subdirectory names)`. The
next incremental audit does not re-list a directory whose mtime is unchanged (creating or
deleting a child always changes it): it sends DirDone(skipped=True) and still visits the
remembered subdirectories. The cache is per leader term: a new election starts empty, so the
first audit lists everything. Full audits ignore the cache (but refresh it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


class AuditCache:
    """path → (mtime in ns, subdirectory names); written from scanner threads."""

    def __init__(self) -> None:
        self._dirs: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._dirs)

    def unchanged(self, path: str, mtime: int) -> tuple[str, ...] | None:
        """The remembered subdirectories when `path` still has the remembered mtime, else None."""
        seen = self._dirs.get(path)
        if seen is None or seen[0] != mtime:
            return None
        return seen[1]

    def remember(self, path: str, mtime: int, subdirs: Sequence[str]) -> None:
        with self._lock:
            self._dirs[path] = (mtime, tuple(subdirs))

    def forget(self) -> None:
        with self._lock:
            self._dirs.clear()
