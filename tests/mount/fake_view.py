"""An in-memory stand-in for FusionClient (the ViewAPI protocol) for testing the operations
directly: a tree of API nodes, cursor paging, realtime finds that bring in "blind" entries
after a delay, failure injection and call counts. Time is trio's (autojump_clock friendly)."""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

import trio

from fustor import paths
from fustor.errors import FustorError, NotFoundError, ProtocolError, UnavailableError
from fustor_mount.client import Page, Walk

T0 = 1_700_000_000.25


def node(path: str, kind: str = "file", **kw: Any) -> dict[str, Any]:
    n: dict[str, Any] = {
        "name": paths.split(path)[1], "path": path, "type": kind, "size": 0,
        "mtime": T0, "ctime": T0 + 1, "mode": 0o755 if kind == "dir" else 0o644,
        "uid": 1000, "gid": 100, "integrity_suspect": False, "sources": ["pipe-1"],
        "blind_spot": None, "conflict": False,
    }
    if kind == "symlink":
        n["target"] = "somewhere/else"
    n.update(kw)
    return n


class FakeView:
    view = "test-view"

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {"/": node("/", "dir", name="")}
        self.children: dict[str, list[str]] = {"/": []}
        self.calls: Counter[str] = Counter()
        self.down = False
        self.error: FustorError | None = None
        self.meta: dict[str, Any] = {"partial": False, "logical_clock": T0,
                                     "pipes": {"pipe-1": {"state": "ready", "leader": "a", "stale": False}}}
        # Blind entries: path → node; a find of the parent makes them visible after find_delay.
        self.blind: dict[str, dict[str, Any]] = {}
        self.find_delay = 0.3
        self.job_duration = 0.5
        self.finds: list[str] = []
        self.walks: list[tuple[str, int]] = []
        self._jobs: dict[str, tuple[float, str]] = {}

    # ------------------------------------------------------------------ building
    def add(self, path: str, kind: str = "file", **kw: Any) -> dict[str, Any]:
        parent, name = paths.split(path)
        n = node(path, kind, **kw)
        if path not in self.nodes:
            bisect.insort(self.children[parent], name)
        self.nodes[path] = n
        if kind == "dir":
            self.children.setdefault(path, [])
        return n

    def remove(self, path: str) -> None:
        parent, name = paths.split(path)
        del self.nodes[path]
        self.children[parent].remove(name)

    def add_blind(self, path: str, kind: str = "file", **kw: Any) -> None:
        self.blind[path] = node(path, kind, **kw)

    # ------------------------------------------------------------------ ViewAPI
    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        await trio.lowlevel.checkpoint()
        if self.down:
            raise UnavailableError("cannot reach Fusion (test)")
        if self.error is not None:
            raise self.error
        self._reveal()

    def _reveal(self) -> None:
        now = trio.current_time()
        for path, n in list(self.blind.items()):
            at = n.get("_visible_at")
            if at is not None and at <= now:
                del self.blind[path]
                n.pop("_visible_at")
                self.add(path, n["type"], **{k: v for k, v in n.items() if k not in ("path", "type")})

    def _plain(self, path: str) -> dict[str, Any]:
        n = dict(self.nodes[path])
        if n["type"] == "dir":
            n["child_count"] = len(self.children[path])
        return n

    async def metadata(self, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        await self._enter("metadata")
        if path not in self.nodes:
            raise NotFoundError(f"no entry {path!r}")
        return self._plain(path), dict(self.meta)

    async def list_page(self, path: str, limit: int, cursor: str | None = None) -> Page:
        await self._enter("list_page")
        if path not in self.nodes:
            raise NotFoundError(f"no entry {path!r}")
        names = self.children.get(path, [])
        i = 0 if cursor is None else bisect.bisect_right(names, cursor)
        chunk = names[i:i + limit]
        more = i + limit < len(names)
        return Page(self._plain(path), [self._plain(paths.join(path, n)) for n in chunk],
                    chunk[-1] if more and chunk else None, dict(self.meta))

    async def walk(self, start: str, max_entries: int) -> Walk:
        """Fusion's walk: whole listings from `start` on in pre-order, within the budget."""
        await self._enter("walk")
        self.walks.append((start, max_entries))
        if self.nodes.get(start, {}).get("type") != "dir":
            raise NotFoundError(f"no directory {start!r}")
        if len(self.children[start]) > max_entries:
            raise ProtocolError(f"{start!r} has more than max_entries={max_entries} children")
        order = [p for p in sorted(self.children, key=lambda p: paths.parts(p))]
        listings: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        total = 0
        for d in order[order.index(start):]:
            kids = self.children[d]
            if listings and total + len(kids) > max_entries:
                return Walk(listings, d, dict(self.meta))
            listings.append((self._plain(d), [self._plain(paths.join(d, n)) for n in kids]))
            total += max(1, len(kids))
        return Walk(listings, None, dict(self.meta))

    async def start_find(self, path: str) -> str | None:
        await self._enter("start_find")
        self.finds.append(path)
        now = trio.current_time()
        for p, n in self.blind.items():
            if paths.split(p)[0] == path and "_visible_at" not in n:
                n["_visible_at"] = now + self.find_delay
        job = f"j-{len(self.finds)}"
        self._jobs[job] = (now + self.job_duration, path)
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        await self._enter("job")
        until, path = self._jobs[job_id]
        return {"job_id": job_id, "path": path,
                "state": "done" if trio.current_time() >= until else "pending"}

    async def stats(self) -> dict[str, Any]:
        await self._enter("stats")
        files = sum(1 for n in self.nodes.values() if n["type"] != "dir")
        return {"entries": len(self.nodes), "files": files, "directories": len(self.nodes) - files,
                "total_size": sum(int(n["size"]) for n in self.nodes.values())}
