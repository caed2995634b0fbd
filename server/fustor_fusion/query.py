"""Read side of a view: merged entries (DESIGN §3 union), listings with paging, glob search.

Works on `Holders`: the (pipe tree, node) pairs that hold one path, in the view's pipe order.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import heapq
import itertools
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from fustor.errors import ProtocolError
from fustor_fusion.merge import PipeTree
from fustor_fusion.tree import (
    I_MTIME,
    REC,
    Dir,
    Link,
    Node,
    child_path,
    rec_of,
)

Holders = list[tuple[PipeTree, Node]]
_unpack = REC.unpack


def holders_of(trees: Sequence[PipeTree], path: str) -> Holders:
    out: Holders = []
    for t in trees:
        n = t.get(path)
        if n is not None:
            out.append((t, n))
    return out


def _mtime(h: tuple[PipeTree, Node]) -> float:
    return _unpack(rec_of(h[1]))[I_MTIME]  # type: ignore[no-any-return]


def chosen(holders: Holders) -> tuple[Node, bool]:
    """(the node that represents the union, conflict flag): the newest directory copy if any
    pipe holds a directory, else the newest copy (ties: first pipe)."""
    if len(holders) == 1:
        return holders[0][1], False
    dirs = [h for h in holders if type(h[1]) is Dir]
    if dirs:
        return max(dirs, key=_mtime)[1], len(dirs) != len(holders)
    return max(holders, key=_mtime)[1], False


def dir_copies(holders: Holders) -> list[tuple[PipeTree, Dir]]:
    return [(t, n) for t, n in holders if type(n) is Dir]


def render(path: str, holders: Holders, *, only_path: bool = False) -> dict[str, Any]:
    """The API "Entry" of `path` (docs/API.md), without children."""
    if len(holders) == 1:                      # the common case, kept cheap
        pt, node = holders[0]
        conflict = False
        suspect = path in pt.suspects if pt.suspects else False
        added = path in pt.bs_added if pt.bs_added else False
        sources = [pt.pipe_id]
    else:
        node, conflict = chosen(holders)
        suspect = any(path in pt.suspects for pt, _ in holders)
        added = any(path in pt.bs_added for pt, _ in holders)
        sources = [pt.pipe_id for pt, _ in holders]
    t = type(node)
    kind = "file" if t is bytes else "dir" if t is Dir else "symlink"
    name = path[path.rfind("/") + 1:]
    if only_path:
        return {"name": name, "path": path, "type": kind}
    size, mtime, ctime, mode, uid, gid, _, _ = _unpack(rec_of(node))
    out: dict[str, Any] = {
        "name": name, "path": path, "type": kind, "size": size, "mtime": mtime,
        "ctime": ctime, "mode": mode, "uid": uid, "gid": gid,
        "integrity_suspect": suspect, "sources": sources,
        "blind_spot": "added" if added else None, "conflict": conflict,
    }
    if t is Link:
        out["target"] = node.target  # type: ignore[union-attr]
    elif t is Dir:
        out["child_count"] = (len(node.children) if len(holders) == 1  # type: ignore[union-attr]
                              else child_count(dir_copies(holders)))
    return out


def render_children(parent: str, dirs: list[tuple[PipeTree, Dir]], names: Iterator[str],
                    *, only_path: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """`render` of the children `names` of `parent` (at most `limit`), without their own
    children: a non-recursive listing. The one-copy case, by far the most common, is inlined
    (one dict literal per child); `sources` is one list shared by every child."""
    out: list[dict[str, Any]] = []
    pre = "/" if parent == "/" else parent + "/"
    if limit is not None:
        names = itertools.islice(names, limit)
    if len(dirs) != 1:
        for n in names:
            out.append(render(pre + n, [(t, d.children[n]) for t, d in dirs
                                        if n in d.children], only_path=only_path))
        return out
    pt, d = dirs[0]
    ch = d.children
    if only_path:
        for n in names:
            t = type(ch[n])
            out.append({"name": n, "path": pre + n,
                        "type": "file" if t is bytes else "dir" if t is Dir else "symlink"})
        return out
    sources = [pt.pipe_id]
    suspects = pt.suspects
    added = pt.bs_added
    unpack = _unpack
    for n in names:
        node = ch[n]
        t = type(node)
        path = pre + n
        if t is bytes:
            size, mtime, ctime, mode, uid, gid, _, _ = unpack(node)  # type: ignore[arg-type]
            kind = "file"
        else:
            size, mtime, ctime, mode, uid, gid, _, _ = unpack(node.rec)  # type: ignore[union-attr]
            kind = "dir" if t is Dir else "symlink"
        e: dict[str, Any] = {
            "name": n, "path": path, "type": kind, "size": size, "mtime": mtime,
            "ctime": ctime, "mode": mode, "uid": uid, "gid": gid,
            "integrity_suspect": path in suspects if suspects else False, "sources": sources,
            "blind_spot": "added" if added and path in added else None, "conflict": False,
        }
        if t is Dir:
            e["child_count"] = len(node.children)  # type: ignore[union-attr]
        elif t is Link:
            e["target"] = node.target  # type: ignore[union-attr]
        out.append(e)
    return out


_q = json.encoder.encode_basestring_ascii      # what json.dumps writes for a str (C)
# name and path share the quoted name: `"name":"N","path":"/parent/N"` is written from the
# quoted parent prefix (without its closing quote) and the quoted name (without its opening one).
_ENTRY_FMT = ('{"name":"%s,"path":%s%s,"type":"%s","size":%d,"mtime":%r,"ctime":%r,"mode":%d,'
              '"uid":%d,"gid":%d,"integrity_suspect":%s,"sources":%s,"blind_spot":%s,'
              '"conflict":false%s}')


def children_json(parent: str, pt: PipeTree, d: Dir, names: Iterable[str]) -> list[str]:
    """The JSON texts json.dumps(separators=(",", ":")) writes for `render_children` of a
    directory only one pipe holds, formatted straight from the records: no dict per child,
    and one %-format instead of the encoder's per-value dispatch (about half the time).
    Floats are written with repr, as json does (stored times are finite)."""
    out: list[str] = []
    pre = "/" if parent == "/" else parent + "/"
    pre_q = _q(pre)[:-1]
    ch = d.children
    sources = json.dumps([pt.pipe_id], separators=(",", ":"))
    suspects = pt.suspects
    added = pt.bs_added
    unpack = _unpack
    fmt = _ENTRY_FMT
    for n in names:
        node = ch[n]
        t = type(node)
        if t is bytes:
            size, mtime, ctime, mode, uid, gid, _, _ = unpack(node)  # type: ignore[arg-type]
            kind, extra = "file", ""
        else:
            size, mtime, ctime, mode, uid, gid, _, _ = unpack(node.rec)  # type: ignore[union-attr]
            if t is Dir:
                kind, extra = "dir", f',"child_count":{len(node.children)}'  # type: ignore[union-attr]
            else:
                kind, extra = "symlink", ',"target":' + _q(node.target)  # type: ignore[union-attr]
        nq = _q(n)[1:]
        out.append(fmt % (
            nq, pre_q, nq, kind, size, mtime, ctime, mode, uid, gid,
            "true" if suspects and pre + n in suspects else "false", sources,
            '"added"' if added and pre + n in added else "null", extra))
    return out


def child_count(dirs: list[tuple[PipeTree, Dir]]) -> int:
    if len(dirs) == 1:
        return len(dirs[0][1].children)
    names: set[str] = set()
    for _, d in dirs:
        names.update(d.children)
    return len(names)


# ---------------------------------------------------------------------------- paging
def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8", "surrogatepass")).decode("ascii")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8", "surrogatepass")
    except (ValueError, UnicodeError, binascii.Error):
        raise ProtocolError(f"cursor: {cursor!r} is not a next_cursor of a previous page") from None


def child_names(dirs: list[tuple[PipeTree, Dir]], after: str | None) -> Iterator[str]:
    """Child names of the union, sorted, strictly after `after`. Each directory keeps its
    sorted name list cached, so a page costs a bisect plus the page, not a sort."""
    lists = []
    for _, d in dirs:
        names = d.sorted_names()
        start = 0 if after is None else bisect_right(names, after)
        lists.append(_tail(names, start))      # no slice: a page must not copy the rest
    if len(lists) == 1:
        return lists[0]
    return _dedupe(heapq.merge(*lists))


def _tail(names: list[str], start: int) -> Iterator[str]:
    for i in range(start, len(names)):
        yield names[i]


def _dedupe(it: Iterator[str]) -> Iterator[str]:
    last = None
    for n in it:
        if n != last:
            yield n
            last = n


# ---------------------------------------------------------------------------- search
_GLOB_CHARS = re.compile(r"[*?\[]")


def _segment_regex(seg: str) -> re.Pattern[str] | None:
    """The compiled regex of one glob segment (None: a literal name)."""
    if not _GLOB_CHARS.search(seg):
        return None
    return re.compile(fnmatch.translate(seg), re.DOTALL)


def _segment_matcher(seg: str) -> Callable[[str], bool]:
    rx = _segment_regex(seg)
    if rx is None:
        return seg.__eq__
    return lambda name: rx.match(name) is not None


class Glob:
    """A glob over names (no '/') or over paths relative to the search root ('**' spans any
    number of directories, including none; other wildcards stay within one name; matching is
    case-sensitive, like the storage)."""

    def __init__(self, pattern: str) -> None:
        if not pattern or "\x00" in pattern:
            raise ProtocolError("pattern: must be a non-empty glob without NUL")
        pat = pattern.strip("/")
        if "/" not in pat:
            pat = "**/" + pat
        self.segs = [s for s in pat.split("/") if s]
        if not self.segs or self.segs[-1] == "**":
            self.segs.append("*")       # 'a/**' is what lies below a, not a itself
        self.match = [_segment_matcher(s) for s in self.segs]
        self.literal = [s != "**" and not _GLOB_CHARS.search(s) for s in self.segs]
        self.start = self._closure({0})
        # '**/<one name glob>': a plain walk with one test per name (the common case), run
        # as `filter(rx.match, names)` - no Python call per name
        self.names_only: re.Pattern[str] | None = None
        if len(self.segs) == 2 and self.segs[0] == "**" and self.segs[1] != "**":
            self.names_only = _segment_regex(self.segs[1]) or re.compile(
                re.escape(self.segs[1]) + r"\Z")

    def _closure(self, states: set[int]) -> frozenset[int]:
        todo = list(states)
        while todo:
            i = todo.pop()
            if i < len(self.segs) and self.segs[i] == "**" and i + 1 not in states:
                states.add(i + 1)
                todo.append(i + 1)
        return frozenset(states)

    def step(self, states: frozenset[int], name: str) -> frozenset[int]:
        out: set[int] = set()
        for i in states:
            if i >= len(self.segs):
                continue
            if self.segs[i] == "**":
                out.add(i)
            elif self.match[i](name):
                out.add(i + 1)
        return self._closure(out) if out else frozenset()

    def done(self, states: frozenset[int]) -> bool:
        return len(self.segs) in states

    def literals(self, states: frozenset[int]) -> list[str] | None:
        """The only names that can advance `states`, when all pending segments are literal."""
        live = [i for i in states if i < len(self.segs)]
        if all(self.literal[i] for i in live):
            return [self.segs[i] for i in live]
        return None


def search(trees: Sequence[PipeTree], glob: Glob, top: str, limit: int) -> tuple[list[str], bool]:
    """Paths below `top` matching `glob` (at most `limit`, sorted) and whether more exist."""
    top_holders = holders_of(trees, top)
    found: list[str] = []
    if glob.names_only is not None:
        # A path of the union is a path of one of the trees, under directories of that same
        # tree: walking each tree on its own finds the same paths, without merging listings.
        more = False
        for _, node in top_holders:
            f, m = _search_names(top, node, glob.names_only, limit)
            found.extend(f)
            more = more or m
        if len(top_holders) > 1:
            found = sorted(set(found))
        if len(found) > limit:
            return found[:limit], True
        return found, more
    stack: list[tuple[str, list[tuple[PipeTree, Dir]], frozenset[int]]] = [
        (top, dir_copies(top_holders), glob.start)]
    while stack:
        path, dirs, states = stack.pop()
        names = glob.literals(states)
        for name, nodes in _union_children(dirs, names):
            nxt = glob.step(states, name)
            if not nxt:
                continue
            cp = child_path(path, name)
            if glob.done(nxt):
                found.append(cp)
                if len(found) > limit:
                    found.sort()
                    return found[:limit], True
            sub = [(t, n) for t, n in nodes if type(n) is Dir]
            if sub and any(i < len(glob.segs) for i in nxt):
                stack.append((cp, sub, nxt))
    found.sort()
    return found, False


def _search_names(top: str, node: Node, rx: re.Pattern[str], limit: int
                  ) -> tuple[list[str], bool]:
    """The '**/<name glob>' walk: per directory, one C-level filter over its names and one
    pass picking its subdirectories; a path is built only for a match or a directory."""
    found: list[str] = []
    if type(node) is not Dir:
        return found, False
    match = rx.match
    stack: list[tuple[str, Dir]] = [(top, node)]
    while stack:
        path, d = stack.pop()
        pre = "/" if path == "/" else path + "/"
        ch = d.children
        hits = list(filter(match, ch))
        if hits:
            found.extend([pre + name for name in hits])
            if len(found) > limit:
                found.sort()
                return found[:limit], True
        stack.extend([(pre + name, n) for name, n in ch.items()
                      if type(n) is Dir])
    found.sort()
    return found, False


def _union_children(dirs: list[tuple[PipeTree, Dir]], only: list[str] | None
                    ) -> Iterator[tuple[str, Holders]]:
    if only is not None:
        for name in only:
            hs: Holders = [(t, d.children[name]) for t, d in dirs if name in d.children]
            if hs:
                yield name, hs
        return
    if len(dirs) == 1:
        t, d = dirs[0]
        for name, n in list(d.children.items()):
            yield name, [(t, n)]
        return
    merged: dict[str, Holders] = {}
    for t, d in dirs:
        for name, n in d.children.items():
            merged.setdefault(name, []).append((t, n))
    yield from merged.items()
