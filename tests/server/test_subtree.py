"""Bounded recursive listings (`max_entries`): breadth-first, each directory whole or not at
all, every `children` list complete; plus the HTTP parameter's validation."""

from __future__ import annotations

from typing import Any

import pytest
from fusion_rows import dir_, file, make_view, scan
from test_api_query import V1, Client, ready, state  # noqa: F401  (fixtures)

from fustor.errors import ProtocolError
from fustor_fusion.state import FusionState
from fustor_fusion.subtree import bounded_tree
from fustor_fusion.view import View


@pytest.fixture
def view() -> View:
    # /t: a (3 files), b (dir c (2 files)), big (6 files), empty (nothing), x.dat
    v, _ = make_view(max_tree_items=100)
    rows = [dir_("/t"), dir_("/t/a"), dir_("/t/b"), dir_("/t/b/c"), dir_("/t/big"),
            dir_("/t/empty"), file("/t/x.dat")]
    rows += [file(f"/t/a/f{i}") for i in range(3)]
    rows += [file(f"/t/b/c/g{i}") for i in range(2)]
    rows += [file(f"/t/big/h{i}") for i in range(6)]
    v.apply("p1", scan("s", "snapshot", rows))
    return v


def _by_name(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in entry["children"]}


def _count(entry: dict[str, Any]) -> int:
    return sum(1 + _count(c) for c in entry.get("children") or [])


def test_expands_breadth_first_whole_directories_within_budget(view: View) -> None:
    # 5 children of /t, then a (3), b (1), big (6 > 14-5-3-1=5: skipped), empty (0), then
    # b/c (2): 11 entries; big stays out although smaller ones after it got in.
    entry, cur = bounded_tree(view, "/t", max_entries=14)
    assert cur is None
    kids = _by_name(entry)
    assert [c["name"] for c in kids["a"]["children"]] == ["f0", "f1", "f2"]
    assert [c["name"] for c in kids["b"]["children"]] == ["c"]
    assert [c["name"] for c in kids["b"]["children"][0]["children"]] == ["g0", "g1"]
    assert "children" not in kids["big"] and kids["big"]["child_count"] == 6
    assert kids["empty"]["children"] == []
    assert "children" not in kids["x.dat"]
    assert _count(entry) == 11 <= 14


def test_every_children_list_equals_the_plain_listing(view: View) -> None:
    entry, _ = bounded_tree(view, "/t", max_entries=100)
    assert _count(entry) == 17
    stack = [entry]
    while stack:
        node = stack.pop()
        if "children" in node:
            plain, _ = view.tree(node["path"], recursive=False)
            assert [{k: v for k, v in c.items() if k != "children"}
                    for c in node["children"]] == plain["children"]
            stack.extend(node["children"])


def test_max_depth_limit_cursor_and_only_path(view: View) -> None:
    entry, _ = bounded_tree(view, "/t", max_entries=100, max_depth=1)
    assert all("children" not in c for c in entry["children"])
    entry, _ = bounded_tree(view, "/t", max_entries=100, max_depth=2)
    b = _by_name(entry)["b"]
    assert "children" in b and "children" not in b["children"][0]
    page, cur = bounded_tree(view, "/t", max_entries=100, limit=2)
    assert [c["name"] for c in page["children"]] == ["a", "b"] and cur is not None
    assert "children" in page["children"][1]
    rest, cur2 = bounded_tree(view, "/t", max_entries=100, limit=10, cursor=cur)
    assert [c["name"] for c in rest["children"]] == ["big", "empty", "x.dat"] and cur2 is None
    slim, _ = bounded_tree(view, "/t", max_entries=100, only_path=True)
    assert _by_name(slim)["a"]["children"][0] == {"name": "f0", "path": "/t/a/f0", "type": "file"}


def test_bad_budgets_are_refused(view: View) -> None:
    with pytest.raises(ProtocolError, match="max_entries"):
        bounded_tree(view, "/t", max_entries=0)
    with pytest.raises(ProtocolError, match="max_tree_items"):
        bounded_tree(view, "/t", max_entries=101)
    with pytest.raises(ProtocolError, match="more than max_entries=3"):
        bounded_tree(view, "/t", max_entries=3)  # 5 children, no paging asked for
    page, cur = bounded_tree(view, "/t", max_entries=3, limit=10)  # paged: the budget caps it
    assert len(page["children"]) == 3 and cur is not None


async def test_http_parameter(ready: FusionState) -> None:  # noqa: F811
    c = Client(ready)
    code, body, _ = await c.get(f"{V1}/tree", path="/data", max_entries="50")
    assert code == 200
    sub = {ch["name"]: ch for ch in body["entry"]["children"]}["sub"]
    assert sorted(ch["name"] for ch in sub["children"]) == ["pipe-1.bin", "pipe-2.bin"]
    code, body, _ = await c.get(f"{V1}/tree", path="/data", max_entries="50", recursive="false")
    assert code == 400 and "max_entries" in body["message"]
    code, body, _ = await c.get(f"{V1}/tree", path="/data", max_entries="0")
    assert code == 400
    code, body, _ = await c.get(f"{V1}/tree", path="/data", max_entries="lots")
    assert code == 400
