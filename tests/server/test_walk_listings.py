"""Listings in walk order (`GET .../walk`): pre-order like find, each listing whole, stops
before a listing that does not fit, continues from `next`; errors change nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fusion_rows import dir_, file, make_view, scan
from test_api_query import V1, Client, ready, state  # noqa: F401  (fixtures)

from fustor.errors import NotFoundError, ProtocolError
from fustor_fusion.state import FusionState
from fustor_fusion.view import View
from fustor_fusion.walk import walk_listings


@pytest.fixture
def view() -> View:
    # /a (x, b/ (2 files), c/ (d/ (1 file))), /big (6 files), /e/ (empty), /z.dat
    v, _ = make_view(pipes=("p1", "p2"), max_tree_items=100)
    v.apply("p1", scan("s1", "snapshot", [
        dir_("/a"), file("/a/x"), dir_("/a/b"), file("/a/b/f0"), file("/a/b/f1"),
        dir_("/a/c"), dir_("/a/c/d"), file("/a/c/d/g"), dir_("/big"), file("/z.dat"),
        *[file(f"/big/h{i}") for i in range(6)]]))
    v.apply("p2", scan("s2", "snapshot", [dir_("/e"), dir_("/a"), file("/a/only-p2")]))
    return v


def _dirs(listings: list[dict[str, Any]]) -> list[str]:
    return [ls["entry"]["path"] for ls in listings]


PRE_ORDER = ["/", "/a", "/a/b", "/a/c", "/a/c/d", "/big", "/e"]


def test_whole_walk_is_find_order_with_complete_listings(view: View) -> None:
    listings, nxt = walk_listings(view, "/", "/", max_entries=100)
    assert nxt is None and _dirs(listings) == PRE_ORDER
    for ls in listings:
        plain, _ = view.tree(ls["entry"]["path"], recursive=False)
        assert ls["children"] == plain.pop("children") and ls["entry"] == plain
    a = listings[1]["children"]
    assert [c["name"] for c in a] == ["b", "c", "only-p2", "x"]  # union of both pipes


def test_budget_stops_before_a_listing_that_does_not_fit_and_next_resumes(view: View) -> None:
    seen: list[str] = []
    start: str | None = "/"
    requests = 0
    while start is not None:
        listings, start = walk_listings(view, "/", start, max_entries=7)
        requests += 1
        assert sum(max(1, len(ls["children"])) for ls in listings) <= 7
        seen += _dirs(listings)
    # [/] (4; /a's 4 more would not fit), [/a /a/b /a/c] (4+2+1), [/a/c/d /big] (1+6), [/e]
    assert seen == PRE_ORDER and requests == 4
    listings, nxt = walk_listings(view, "/", "/", max_entries=7)
    assert _dirs(listings) == ["/"] and nxt == "/a"  # / has 4 children, /a 4 more: too many


def test_from_inside_goes_on_after_its_subtree_within_scope(view: View) -> None:
    listings, nxt = walk_listings(view, "/", "/a/b", max_entries=100)
    assert _dirs(listings) == ["/a/b", "/a/c", "/a/c/d", "/big", "/e"] and nxt is None
    listings, nxt = walk_listings(view, "/a", "/a/b", max_entries=100)
    assert _dirs(listings) == ["/a/b", "/a/c", "/a/c/d"] and nxt is None


def test_a_directory_bigger_than_the_budget(view: View) -> None:
    listings, nxt = walk_listings(view, "/", "/a/c", max_entries=5)
    assert _dirs(listings) == ["/a/c", "/a/c/d"] and nxt == "/big"
    with pytest.raises(ProtocolError, match="more than max_entries=5 children"):
        walk_listings(view, "/", "/big", max_entries=5)


def test_bad_requests(view: View) -> None:
    with pytest.raises(ProtocolError, match="max_entries"):
        walk_listings(view, "/", "/", max_entries=0)
    with pytest.raises(ProtocolError, match="max_tree_items"):
        walk_listings(view, "/", "/", max_entries=101)
    with pytest.raises(ProtocolError, match="not '/a' or below"):
        walk_listings(view, "/a", "/big", max_entries=10)
    with pytest.raises(NotFoundError):
        walk_listings(view, "/", "/nope", max_entries=10)
    with pytest.raises(NotFoundError):
        walk_listings(view, "/", "/z.dat", max_entries=10)  # a file has no listing
    with pytest.raises(NotFoundError):
        walk_listings(view, "/nope", "/nope", max_entries=10)


async def test_http_endpoint(ready: FusionState) -> None:  # noqa: F811
    c = Client(ready)
    code, body, _ = await c.get(f"{V1}/walk", path="/data", max_entries="50")
    assert code == 200 and body["next"] is None and body["from"] == "/data"
    assert [ls["entry"]["path"] for ls in body["listings"]] == ["/data", "/data/sub"]
    assert sorted(ch["name"] for ch in body["listings"][1]["children"]) == [
        "pipe-1.bin", "pipe-2.bin"]
    code, body, _ = await c.get(f"{V1}/walk", **{"from": "/data/sub"}, max_entries="1")
    assert code == 400 and "max_entries=1" in body["message"]
    for bad in ({"max_entries": "0"}, {"max_entries": "lots"}, {"from": "/x/../y"}):
        assert (await c.get(f"{V1}/walk", **bad))[0] == 400
    assert (await c.get(f"{V1}/walk", path="/nope"))[0] == 404
    assert (await c.get(f"{V1}/walk", key=None, remote="10.0.0.9"))[0] == 401
