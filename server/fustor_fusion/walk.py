"""Directory listings in walk order (`GET .../walk`): the listing of one directory, then the
listings of the directories that follow it in a pre-order walk (children sorted by name, the
order `find` and `ls -R` visit them), until the answer holds about `max_entries` entries.

A client that walks a tree (the mount under `find`, `du`, `tree`) asks once per few thousand
entries instead of once per directory, and what it gets is what it will ask for next. Each
listing is whole. The walk goes on past the subtree of `from` to the directories after it, up
to the end of `path`'s subtree; `next` names where the following request should start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fustor import paths
from fustor.errors import NotFoundError, ProtocolError
from fustor_fusion import query
from fustor_fusion.merge import PipeTree
from fustor_fusion.tree import Dir, child_path
from fustor_fusion.view import View


def walk_listings(
    view: View, scope: str, start: str, *, max_entries: int
) -> tuple[list[dict[str, Any]], str | None]:
    """([{"entry": dir node, "children": [nodes]}...], next directory or None): listings of
    `start` and the directories after it in the pre-order walk of `scope`'s subtree. A listing
    that would take the answer past `max_entries` is left for the next request (`next`), so a
    directory with more children than that is never in a walk answer: page it with `tree`."""
    cap = view.config.driver_params.max_tree_items
    if not 1 <= max_entries <= cap:
        raise ProtocolError(
            f"max_entries: must be between 1 and {cap} (max_tree_items), got {max_entries}",
            limit=cap)
    if not paths.is_within(start, scope):
        raise ProtocolError(f"from: {start!r} is not {scope!r} or below it")
    trees = [view.tree_of(p) for p in view.pipe_ids]
    if not query.dir_copies(query.holders_of(trees, scope)):
        raise NotFoundError(f"no directory {scope!r} in view {view.id!r}", path=scope)
    if not query.dir_copies(query.holders_of(trees, start)):
        raise NotFoundError(f"no directory {start!r} in view {view.id!r}", path=start)
    # Pending subdirectories, innermost level last: first the directories after `start` at each
    # level between `scope` and `start` (outermost first), then those found on the way.
    stack: list[Iterator[str]] = []
    parent = scope
    for name in paths.parts(start)[len(paths.parts(scope)):]:
        stack.append(_subdirs(trees, parent, after=name))
        parent = paths.join(parent, name)
    listings: list[dict[str, Any]] = []
    total = 0
    d: str | None = start
    while d is not None:
        entry, more = view.tree(d, recursive=False, limit=max_entries - total)
        if more is not None:
            break  # does not fit: the next request starts here
        children = entry.pop("children")
        listings.append({"entry": entry, "children": children})
        total += max(1, len(children))  # an empty directory still costs a listing
        stack.append(iter([c["path"] for c in children if c["type"] == "dir"]))
        d = _next(stack)
        if total >= max_entries:
            break
    if d == start and not listings:
        # `start` alone is bigger than the budget: say so rather than answer nothing.
        raise ProtocolError(
            f"{start!r} has more than max_entries={max_entries} children; page it with "
            "tree?recursive=false&limit=...&cursor=...", limit=max_entries)
    return listings, d


def _next(stack: list[Iterator[str]]) -> str | None:
    while stack:
        d = next(stack[-1], None)
        if d is not None:
            return d
        stack.pop()
    return None


def _subdirs(trees: list[PipeTree], parent: str, *, after: str) -> Iterator[str]:
    """Subdirectories of `parent` (union of the pipes) whose names sort after `after`."""
    dirs = query.dir_copies(query.holders_of(trees, parent))
    for name in query.child_names(dirs, after):
        if any(type(d.children.get(name)) is Dir for _, d in dirs):
            yield child_path(parent, name)
