"""Counters of a view's union when several pipes feed it (DESIGN §3): entries, files,
directories, total size and conflicts of the merged tree, kept incrementally: every pipe tree
reports each path it changes (`Tree.observer`) and only that path is recounted.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from fustor_fusion import query
from fustor_fusion.merge import PipeTree
from fustor_fusion.tree import Dir, Node, rec_of

_ZERO = (0, 0, 0, 0, 0)
_ONE_DIR = (1, 0, 1, 0, 0)
_ONE_LINK = (1, 1, 0, 0, 0)
_size_of = struct.Struct("<q").unpack_from
_size_mtime = struct.Struct("<qd").unpack_from      # the first two fields of REC


def _contribution(nodes: list[Node]) -> tuple[int, int, int, int, int]:
    """(entries, files, dirs, size, conflicts) that one path adds to the union counters.
    Equal mtimes resolve to the first node (the first pipe), as in queries."""
    if len(nodes) == 1:                       # the common cases, kept cheap
        n = nodes[0]
        t = type(n)
        if t is bytes:
            return 1, 1, 0, _size_of(n)[0], 0  # type: ignore[arg-type]
        return _ONE_DIR if t is Dir else _ONE_LINK
    if not nodes:
        return _ZERO
    dirs = sum(1 for n in nodes if type(n) is Dir)
    if dirs:
        return 1, 0, 1, 0, int(dirs != len(nodes))
    best_m = best_s = None
    for n in nodes:
        size, m = _size_mtime(rec_of(n))
        if best_m is None or m > best_m:
            best_m, best_s = m, (size if type(n) is bytes else 0)
    return 1, 1, 0, best_s or 0, 0


class UnionCounters:
    """`values`: entries, files, dirs, size, conflicts of the union (kept with ≥ 2 pipes;
    a single pipe's tree counts itself)."""

    def __init__(self) -> None:
        self.values = [0, 0, 0, 0, 0]

    def attach(self, trees: list[PipeTree]) -> None:
        """Recount the union of `trees` (in the view's pipe order) and observe them."""
        for t in trees:
            t.observer = None
        self.values = [0, 0, 0, 0, 0]
        if len(trees) < 2:
            return
        # recount from scratch (only on construction and reconfiguration)
        seen: set[str] = set()
        for t in trees:
            for path, _ in t.walk("/", t.root):
                if path != "/" and path not in seen:
                    seen.add(path)
                    self._add_contribution(query.holders_of(trees, path), +1)
        for t in trees:
            t.observer = self._observer_for(trees, t)

    def _add_contribution(self, holders: query.Holders, sign: int) -> None:
        c = _contribution([n for _, n in holders])
        u = self.values
        for i in range(5):
            u[i] += sign * c[i]

    def _observer_for(self, trees: list[PipeTree], me: PipeTree
                      ) -> Callable[[str, Node | None, Node | None], None]:
        # keep the view's pipe order: equal mtimes resolve to the first pipe, as in queries
        pos = trees.index(me)
        before_me = trees[:pos]
        after_me = trees[pos + 1:]
        u = self.values

        def copies(ts: list[PipeTree], head: str, name: str) -> list[Node]:
            out = []
            for t in ts:
                if not t.root.children:
                    continue             # an empty tree (a pipe whose snapshot has not begun)
                d = t.get_dir(head)      # each tree caches its last parent: siblings are cheap
                if d is not None:
                    n = d.children.get(name)
                    if n is not None:
                        out.append(n)
            return out

        def observe(path: str, old: Node | None, new: Node | None) -> None:
            # Runs for every row a pipe applies: the common cases are spelled out.
            i = path.rfind("/")
            head, name = path[:i] or "/", path[i + 1:]
            lo = copies(before_me, head, name) if before_me else _NONE
            hi = copies(after_me, head, name) if after_me else _NONE
            if not lo and not hi:            # only this pipe holds the path
                if old is None and type(new) is bytes:
                    u[0] += 1
                    u[1] += 1
                    u[3] += _size_of(new)[0]
                    return
                a = _contribution([old]) if old is not None else _ZERO
                b = _contribution([new]) if new is not None else _ZERO
            elif old is None and type(new) is bytes and (
                    (low := _newest(lo)) is not None and (high := _newest(hi)) is not None):
                # a file copy joins files: the union's entry stays one file, and only its
                # size can change, when the new copy is the newest (ties: earlier pipe)
                size, m = _size_mtime(new)
                best_s, best_m = low
                if m > best_m and m >= high[1]:
                    u[3] += size - (high[0] if high[1] > best_m else best_s)
                return
            else:
                mine_old = [old] if old is not None else []
                mine_new = [new] if new is not None else []
                a = _contribution(lo + mine_old + hi)
                b = _contribution(lo + mine_new + hi)
            u[0] += b[0] - a[0]
            u[1] += b[1] - a[1]
            u[2] += b[2] - a[2]
            u[3] += b[3] - a[3]
            u[4] += b[4] - a[4]
        return observe


_NONE: list[Node] = []


def _newest(nodes: list[Node]) -> tuple[int, float] | None:
    """(size, mtime) of the first newest of `nodes` if all are files, (0, -inf) if there are
    none, None if one is not a file."""
    best_s, best_m = 0, -math.inf
    for n in nodes:
        if type(n) is not bytes:
            return None
        size, m = _size_mtime(n)
        if m > best_m:
            best_s, best_m = size, m
    return best_s, best_m
