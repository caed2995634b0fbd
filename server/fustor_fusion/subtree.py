"""Bounded recursive listings (`tree?...&max_entries=N`): a directory's children, then the
directories below it expanded breadth-first, each whole or not at all, while the answer stays
within N entries.

A client walking a tree (the mount under `find`) gets a few thousand entries of a subtree in one
request instead of one request per directory. Every `children` list in the answer is complete,
so the client may cache it as that directory's listing; a directory left out has no `children`
key and its `child_count` says what a later request would bring. Built on View.tree, so it
answers exactly what non-recursive listings of the same directories would.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from fustor.errors import ProtocolError
from fustor_fusion.view import View


def bounded_tree(
    view: View, path: str, *, max_entries: int, max_depth: int | None = None,
    only_path: bool = False, limit: int | None = None, cursor: str | None = None,
) -> tuple[dict[str, Any], str | None]:
    """(entry with children, next_cursor): `path`'s children (one page with `limit`), then
    breadth-first expansion below them within `max_entries` entries in all."""
    cap = view.config.driver_params.max_tree_items
    if not 1 <= max_entries <= cap:
        raise ProtocolError(
            f"max_entries: must be between 1 and {cap} (max_tree_items), got {max_entries}",
            limit=cap)
    if max_depth is not None and max_depth < 0:
        raise ProtocolError(f"max_depth: must be >= 0, got {max_depth}")
    if max_depth == 0:
        return view.tree(path, recursive=False, max_depth=0, only_path=only_path)
    top_limit = max_entries if limit is None else min(limit, max_entries)
    entry, next_cursor = view.tree(path, recursive=False, only_path=only_path, limit=top_limit,
                                   cursor=cursor)
    if limit is None and next_cursor is not None:
        # Without paging the caller asked for the whole directory: too big for this budget.
        raise ProtocolError(
            f"{path!r} has more than max_entries={max_entries} children; page it with limit "
            "and cursor, or raise max_entries", limit=max_entries)
    children: list[dict[str, Any]] = entry.get("children") or []
    room = max_entries - len(children)
    queue: deque[tuple[dict[str, Any], int]] = deque((c, 2) for c in children)
    while queue and room > 0:
        node, depth = queue.popleft()
        if node["type"] != "dir" or (max_depth is not None and depth > max_depth):
            continue
        count = node.get("child_count")
        if count is None:  # only_path nodes carry no count: look it up
            full = view.node(node["path"])
            count = 0 if full is None else full.get("child_count", 0)
        if count > room:
            continue  # too big for what is left; smaller ones further on may still fit
        sub, _ = view.tree(node["path"], recursive=False, only_path=only_path)
        got: list[dict[str, Any]] = sub.get("children") or []
        node["children"] = got
        room -= len(got)
        queue.extend((c, depth + 1) for c in got)
    return entry, next_cursor
