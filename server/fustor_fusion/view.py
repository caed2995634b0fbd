"""A view: one PipeTree per pipe routed to it, queried as their union (DESIGN §3).

Sync, no I/O: the service applies batches and answers queries between two awaits. The
union's counters are kept incrementally by union.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from typing import Any

from fustor.config import ViewConfig
from fustor.errors import NotFoundError, ProtocolError
from fustor.protocol import Event, ScanEnd, ScanStart
from fustor_fusion import query
from fustor_fusion.merge import PipeTree
from fustor_fusion.tree import Dir, child_path
from fustor_fusion.union import UnionCounters

log = logging.getLogger(__name__)

__all__ = ["PipeTree", "View"]


class View:
    """The contract API (docs/API.md shapes) plus, for the service: `pipe_ids`, `add_pipe` /
    `remove_pipe` (reload), `abort_scans` (leader gone), `snapshot_running`, `logical_clock`.

    Query notes: the root's `name` is ""; children are sorted by code point; `next_cursor` is
    the last returned name, base64url-encoded (a page starts strictly after it, so it stays
    valid while the directory changes); `max_tree_items` counts every node of the answer,
    the requested entry included, and raises ProtocolError (400) naming the ways to narrow it.
    """

    def __init__(
        self,
        config: ViewConfig,
        pipe_ids: Sequence[str],
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = config.id
        self.config = config
        self._wall = wall
        self._mono = mono
        self.on_scan_end: Callable[[str, ScanEnd, ScanStart], None] | None = None
        self._trees: dict[str, PipeTree] = {}
        self._union = UnionCounters()
        for pid in pipe_ids:
            self._trees[pid] = PipeTree(pid, config.driver_params, wall=wall, mono=mono)
        self._install_observers()

    # ------------------------------------------------------------------ pipes
    @property
    def pipe_ids(self) -> list[str]:
        return list(self._trees)

    def tree_of(self, pipe_id: str) -> PipeTree:
        try:
            return self._trees[pipe_id]
        except KeyError:
            raise NotFoundError(f"pipe {pipe_id!r} is not routed to view {self.id!r}") from None

    def add_pipe(self, pipe_id: str) -> PipeTree:
        """Route one more pipe to this view (config reload); its tree starts empty."""
        if pipe_id not in self._trees:
            self._trees[pipe_id] = PipeTree(pipe_id, self.config.driver_params,
                                             wall=self._wall, mono=self._mono)
            self._install_observers()
        return self._trees[pipe_id]

    def remove_pipe(self, pipe_id: str) -> None:
        """Stop serving a pipe (config reload); the union counters are recounted once."""
        if self._trees.pop(pipe_id, None) is not None:
            self._install_observers()

    def _install_observers(self) -> None:
        self._union.attach(list(self._trees.values()))

    # ------------------------------------------------------------------ ingest
    def apply(self, pipe_id: str, events: Sequence[Event]) -> int:
        """Apply rows in order (the caller validated the batch); returns rows applied."""
        t = self.tree_of(pipe_id)
        n = t.apply(events)
        if t.ended:
            self._drain(t)
        return n

    def _drain(self, t: PipeTree) -> None:
        ended, t.ended = t.ended, []
        hook = self.on_scan_end
        for end, start in ended:
            if hook is not None:
                try:
                    hook(t.pipe_id, end, start)
                except Exception:
                    log.exception("view %s: on_scan_end hook failed for scan %s",
                                  self.id, end.scan)

    def scan_progress(self, pipe_id: str) -> dict[str, Any]:
        t = self.tree_of(pipe_id)
        return {
            "running": [s.info() for s in t.scans.values()],
            "finished": dict(t.finished),
            "snapshot_done": t.snapshot_done,
            "snapshot_running": t.scan_running("snapshot"),
        }

    def snapshot_done(self, pipe_id: str) -> bool:
        return self.tree_of(pipe_id).snapshot_done

    def snapshot_running(self, pipe_id: str) -> bool:
        return self.tree_of(pipe_id).scan_running("snapshot")

    def abort_scans(self, pipe_id: str, why: str = "the leader went away", *,
                    only: Iterable[str] | None = None, keep: Container[str] = ()) -> int:
        """Abandon running scans of a pipe that will never end (see PipeTree.abort_scans; no
        missing-item removal; `on_scan_end` hears of each as a failed ScanEnd)."""
        t = self.tree_of(pipe_id)
        n = t.abort_scans(why, only=only, keep=keep)
        self._drain(t)
        return n

    def expire(self) -> None:
        """Janitor: suspect expiry/renewal (rule 7), scans idle for an hour, and tombstones
        past their TTL that no running scan can still need."""
        now = self._wall()
        for t in self._trees.values():
            t.expire_suspects()
            t.expire_scans(now)
            t.purge_tombstones(now, before=t.oldest_scan_start())
            if t.ended:
                self._drain(t)

    # ------------------------------------------------------------------ queries
    def _holders(self, path: str) -> query.Holders:
        return query.holders_of(list(self._trees.values()), path)

    def node(self, path: str) -> dict[str, Any] | None:
        hs = self._holders(path)
        if not hs:
            return None
        return query.render(path, hs)

    def tree(
        self,
        path: str,
        *,
        recursive: bool = True,
        max_depth: int | None = None,
        only_path: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        if max_depth is not None and max_depth < 0:
            raise ProtocolError(f"max_depth: must be >= 0, got {max_depth}")
        if limit is not None and limit < 0:
            raise ProtocolError(f"limit: must be >= 0, got {limit}")
        after = None if cursor is None else query.decode_cursor(cursor)
        hs = self._holders(path)
        if not hs:
            raise NotFoundError(f"path {path!r} is not in view {self.id!r}")
        depth = max_depth if recursive else min(1, 1 if max_depth is None else max_depth)
        cap = self.config.driver_params.max_tree_items
        budget = [cap - 1]
        entry = query.render(path, hs, only_path=only_path)
        dirs = query.dir_copies(hs)
        if not dirs or depth == 0:
            return entry, None
        if depth == 1 and limit is None and query.child_count(dirs) > cap - 1:
            self._too_large(cap)
        names = query.child_names(dirs, after)
        next_cursor = None
        if depth == 1:
            # a non-recursive listing: no per-child frames, holders or sub-listings
            listing = query.render_children(path, dirs, names, only_path=only_path,
                                            limit=limit)
            if len(listing) > cap - 1:
                self._too_large(cap)
            if limit is not None and next(names, None) is not None:
                next_cursor = query.encode_cursor(listing[-1]["name"]) if listing else (
                    cursor if cursor is not None else query.encode_cursor(""))
            entry["children"] = listing
            return entry, next_cursor
        children: list[dict[str, Any]] = []
        for name in names:
            if limit is not None and len(children) >= limit:
                next_cursor = query.encode_cursor(children[-1]["name"]) if children else (
                    cursor if cursor is not None else query.encode_cursor(""))
                break
            children.append(self._render_sub(path, dirs, name, depth - 1 if depth else None,
                                             only_path, budget, cap))
        entry["children"] = children
        return entry, next_cursor

    def listing_json(self, path: str, *, limit: int | None = None, cursor: str | None = None,
                     max_children: int = 5000) -> tuple[str, str | None] | None:
        """`tree(path, recursive=False, limit=, cursor=)` as (entry JSON text, next_cursor),
        the children encoded straight from their records (`query.children_json`), when one
        pipe holds the directory and the answer has at most `max_children` children; None
        otherwise (the caller uses `tree`). Same text as json.dumps(separators=(",", ":"))
        of `tree`'s entry."""
        if limit is not None and limit < 0:
            raise ProtocolError(f"limit: must be >= 0, got {limit}")
        after = None if cursor is None else query.decode_cursor(cursor)
        hs = self._holders(path)
        if len(hs) != 1 or type(hs[0][1]) is not Dir:
            return None
        pt, d = hs[0]
        n = len(d.children)  # type: ignore[union-attr]
        cap = self.config.driver_params.max_tree_items
        if min(n, limit if limit is not None else n) > min(max_children, cap - 1):
            return None                       # big: `tree` answers (or refuses) it
        entry = query.render(path, hs)
        names = query.child_names([(pt, d)], after)  # type: ignore[list-item]
        picked = list(names) if limit is None else list(itertools.islice(names, limit))
        kids = query.children_json(path, pt, d, picked)  # type: ignore[arg-type]
        next_cursor = None
        if limit is not None and next(names, None) is not None:
            next_cursor = query.encode_cursor(picked[-1]) if picked else (
                cursor if cursor is not None else query.encode_cursor(""))
        head = json.dumps(entry, separators=(",", ":"))
        return f'{head[:-1]},"children":[{",".join(kids)}]}}', next_cursor

    def _render_sub(self, parent: str, dirs: list[tuple[PipeTree, Dir]], name: str,
                    depth: int | None, only_path: bool, budget: list[int], cap: int
                    ) -> dict[str, Any]:
        """The node `parent/name` with `depth` levels of children (None: all), iteratively:
        a tree may be deeper than Python's recursion limit."""
        top: list[dict[str, Any]] = []
        Frame = tuple[list[dict[str, Any]], str, list[tuple[PipeTree, Dir]], Iterator[str],
                      int | None]
        stack: list[Frame] = [(top, parent, dirs, iter((name,)), depth)]
        while stack:
            out, p, ds, names, dep = stack[-1]
            n = next(names, None)
            if n is None:
                stack.pop()
                continue
            budget[0] -= 1
            if budget[0] < 0:
                self._too_large(cap)
            cp = child_path(p, n)
            hs: query.Holders = [(t, d.children[n]) for t, d in ds if n in d.children]
            node = query.render(cp, hs, only_path=only_path)
            out.append(node)
            sub = query.dir_copies(hs)
            if sub and dep != 0:
                node["children"] = []
                stack.append((node["children"], cp, sub, query.child_names(sub, None),
                              None if dep is None else dep - 1))
        return top[0]

    @staticmethod
    def _too_large(cap: int) -> None:
        raise ProtocolError(
            f"the answer would hold more than {cap} entries (max_tree_items); narrow it with "
            "recursive=false, max_depth, or limit/cursor paging", limit=cap)

    def search(
        self, pattern: str, *, path: str = "/", limit: int = 1000
    ) -> tuple[list[dict[str, Any]], bool]:
        if limit < 1:
            raise ProtocolError(f"limit: must be >= 1, got {limit}")
        glob = query.Glob(pattern)
        trees = list(self._trees.values())
        if not query.holders_of(trees, path):
            raise NotFoundError(f"path {path!r} is not in view {self.id!r}")
        found, truncated = query.search(trees, glob, path, limit)
        out = []
        for p in found:
            hs = query.holders_of(trees, p)
            if hs:
                out.append(query.render(p, hs))
        return out, truncated

    # ------------------------------------------------------------------ status
    def stats(self) -> dict[str, Any]:
        trees = list(self._trees.values())
        if len(trees) == 1:
            t = trees[0]
            entries, files, dirs, size, conflicts = t.entries, t.files, t.dirs, t.total_size, 0
        else:
            entries, files, dirs, size, conflicts = self._union.values
        return {
            "view": self.id,
            "entries": entries, "files": files, "directories": dirs, "total_size": size,
            "suspects": sum(len(t.suspects) for t in trees),
            "blind_spots": sum(len(t.bs_added) + len(t.bs_deleted) for t in trees),
            "conflicts": conflicts,
            "logical_clock": self.logical_clock(),
            "pipes": {t.pipe_id: self._pipe_stats(t) for t in trees},
        }

    def logical_clock(self) -> float:
        """The newest watermark of the view's pipes (Fusion time when it has none)."""
        return max((t.watermark for t in self._trees.values()), default=self._wall())

    def _pipe_stats(self, t: PipeTree) -> dict[str, Any]:
        snaps = [s for s in t.scans.values() if s.start.kind == "snapshot"]
        last = t.finished.get("snapshot")
        if snaps:
            snapshot = {"running": True, "done": t.snapshot_done, "entries": snaps[0].entries,
                        "started": snaps[0].started, "finished": None}
        else:
            snapshot = {"running": False, "done": t.snapshot_done,
                        "entries": last["entries"] if last else 0,
                        "started": last["started"] if last else None,
                        "finished": last["finished"] if last else None}

        def audit(kind: str) -> dict[str, Any] | None:
            f = t.finished.get(kind)
            if f is None:
                return None
            return {"finished_at": f["finished"], "duration_sec": f["duration_sec"],
                    "entries": f["entries"], "added": f["added"], "removed": f["removed"],
                    "ok": f["ok"]}

        return {
            "entries": t.entries, "files": t.files, "directories": t.dirs,
            "total_size": t.total_size, "suspects": len(t.suspects),
            "blind_spots": {"additions": len(t.bs_added), "deletions": len(t.bs_deleted)},
            "tombstones": len(t.tombstones), "events_applied": t.events_applied,
            "last_event_at": t.last_event_at, "logical_clock": t.watermark,
            "clock_samples": t.clock.samples, "orphan_rows": t.orphan_rows,
            "blind_spots_dropped": t.blind_spots_dropped,
            "snapshot": snapshot,
            "audits": {"incremental": audit("audit"), "full": audit("full_audit")},
            "scans_running": [s.info() for s in t.scans.values()],
        }

    def blind_spots(self) -> dict[str, list[dict[str, Any]]]:
        adds: list[dict[str, Any]] = []
        dels: list[dict[str, Any]] = []
        for t in self._trees.values():
            adds.extend({"path": p, "pipe": t.pipe_id, "at": at} for p, at in t.bs_added.items())
            dels.extend({"path": p, "pipe": t.pipe_id, "at": at}
                        for p, at in t.bs_deleted.items())
        return {"additions": adds, "deletions": dels}

    def suspects(self) -> list[dict[str, Any]]:
        mono = self._mono()
        return [{"path": p, "pipe": t.pipe_id, "mtime": m, "expires_in": max(0.0, exp - mono)}
                for t in self._trees.values() for p, (exp, m) in t.suspects.items()]

    def sentinel_targets(self, pipe_id: str, *, limit: int = 1000) -> dict[str, list[str]]:
        t = self.tree_of(pipe_id)
        sus: list[str] = []
        for p in t.suspects:
            if len(sus) >= limit:
                break
            sus.append(p)
        return {"suspects": sus, "recent": t.recent_files(limit)}
