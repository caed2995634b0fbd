"""Queries of a view: tree listings, depth, paging, max_tree_items, search, status lists."""

from __future__ import annotations

import pytest
from fusion_rows import T0, delete, dir_, file, make_view, scan, up

from fustor.errors import NotFoundError, ProtocolError


def _names(entry: dict) -> list[str]:  # type: ignore[type-arg]
    return [c["name"] for c in entry["children"]]


@pytest.fixture
def view():  # type: ignore[no-untyped-def]
    v, _ = make_view(max_tree_items=50)
    v.apply("p1", scan("s", "snapshot", [
        dir_("/up"), dir_("/up/a"), file("/up/a/data_1.dat", size=1),
        file("/up/a/data_2.txt", size=2), dir_("/up/a/deep"), file("/up/a/deep/data_3.dat"),
        file("/up/z.dat"), file("/top.dat"), up("/link", "symlink", target="up"),
    ]))
    return v


def test_tree_recursive_sorted_children(view) -> None:  # type: ignore[no-untyped-def]
    entry, cur = view.tree("/")
    assert cur is None
    assert _names(entry) == ["link", "top.dat", "up"]
    up_ = entry["children"][2]
    assert _names(up_) == ["a", "z.dat"]
    a = up_["children"][0]
    assert _names(a) == ["data_1.dat", "data_2.txt", "deep"]
    assert _names(a["children"][2]) == ["data_3.dat"]
    assert "children" not in a["children"][0]          # files have none
    assert entry["children"][0]["target"] == "up"


def test_tree_depth_and_non_recursive(view) -> None:  # type: ignore[no-untyped-def]
    e, _ = view.tree("/up", recursive=False)
    assert _names(e) == ["a", "z.dat"]
    assert "children" not in e["children"][0] and e["children"][0]["child_count"] == 3
    e, _ = view.tree("/up", max_depth=0)
    assert "children" not in e and e["child_count"] == 2
    e, _ = view.tree("/up", max_depth=2)
    a = e["children"][0]
    assert _names(a) == ["data_1.dat", "data_2.txt", "deep"]
    assert "children" not in a["children"][2]
    e, _ = view.tree("/up/a/data_1.dat")
    assert e["type"] == "file" and "children" not in e


def test_tree_only_path(view) -> None:  # type: ignore[no-untyped-def]
    e, _ = view.tree("/up", only_path=True, recursive=False)
    assert e == {"name": "up", "path": "/up", "type": "dir", "children": [
        {"name": "a", "path": "/up/a", "type": "dir"},
        {"name": "z.dat", "path": "/up/z.dat", "type": "file"}]}


def test_tree_unknown_path_and_bad_args(view) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFoundError):
        view.tree("/nope")
    with pytest.raises(ProtocolError):
        view.tree("/", cursor="!!not base64!!")
    with pytest.raises(ProtocolError):
        view.tree("/", limit=-1)
    with pytest.raises(ProtocolError):
        view.tree("/", max_depth=-1)


def test_paging_a_big_directory() -> None:
    v, _ = make_view(max_tree_items=1000)
    names = [f"n{i:05d}" for i in range(2500)]
    shuffled = names[1::2] + names[::2]
    v.apply("p1", [dir_("/big")] + [file(f"/big/{n}") for n in shuffled])
    with pytest.raises(ProtocolError) as ei:
        v.tree("/big", recursive=False)          # 2500 children > max_tree_items
    assert ei.value.status == 400 and "max_tree_items" in ei.value.message
    assert "limit" in ei.value.message
    got: list[str] = []
    cursor = None
    pages = 0
    while True:
        e, cursor = v.tree("/big", recursive=False, limit=300, cursor=cursor)
        got.extend(_names(e))
        pages += 1
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert got == names and pages == 9


def test_paging_sees_changes_between_pages() -> None:
    v, _ = make_view()
    v.apply("p1", [file(f"/d/{c}") for c in "acegi"])
    e, cur = v.tree("/d", recursive=False, limit=2)
    assert _names(e) == ["a", "c"]
    v.apply("p1", [file("/d/b"), file("/d/f"), delete("/d/e")])
    e, cur = v.tree("/d", recursive=False, limit=2, cursor=cur)
    assert _names(e) == ["f", "g"]
    e, cur = v.tree("/d", recursive=False, limit=2, cursor=cur)
    assert _names(e) == ["i"] and cur is None


def test_paging_cache_follows_removed_and_readded_names() -> None:
    v, _ = make_view()
    v.apply("p1", [file(f"/d/{c}") for c in "abc"])
    assert _names(v.tree("/d")[0]) == ["a", "b", "c"]
    v.apply("p1", [delete("/d/b"), file("/d/b"), file("/d/0")])
    assert _names(v.tree("/d")[0]) == ["0", "a", "b", "c"]
    v.apply("p1", [delete("/d/a")])
    assert _names(v.tree("/d")[0]) == ["0", "b", "c"]


def test_paging_across_two_pipes_dedupes() -> None:
    v, _ = make_view(("p1", "p2"))
    v.apply("p1", [file(f"/d/{c}") for c in "abdf"])
    v.apply("p2", [file(f"/d/{c}") for c in "bcdeg"])
    got: list[str] = []
    cur = None
    while True:
        e, cur = v.tree("/d", recursive=False, limit=3, cursor=cur)
        got += _names(e)
        if cur is None:
            break
    assert got == list("abcdefg")


def test_max_tree_items_on_recursive_listing(view) -> None:  # type: ignore[no-untyped-def]
    v, _ = make_view(max_tree_items=5)
    v.apply("p1", [file(f"/a/b/{i}") for i in range(3)] + [file("/c")])
    with pytest.raises(ProtocolError) as ei:
        v.tree("/")                           # 1 + a, b, 3 files, c = 7 entries
    assert ei.value.status == 400 and "recursive=false" in ei.value.message
    e, _ = v.tree("/", max_depth=2)           # root, a, b, c = 4 entries: fine
    assert _names(e) == ["a", "c"]


def test_search_names_paths_scope_and_limit(view) -> None:  # type: ignore[no-untyped-def]
    m, tr = view.search("*.dat")
    assert [x["path"] for x in m] == ["/top.dat", "/up/a/data_1.dat", "/up/a/deep/data_3.dat",
                                      "/up/z.dat"]
    assert tr is False and m[0]["type"] == "file" and "sources" in m[0]
    m, _ = view.search("*.dat", path="/up/a")
    assert [x["path"] for x in m] == ["/up/a/data_1.dat", "/up/a/deep/data_3.dat"]
    m, _ = view.search("up/**/data_*.dat")
    assert [x["path"] for x in m] == ["/up/a/data_1.dat", "/up/a/deep/data_3.dat"]
    m, _ = view.search("up/*/data_*")
    assert [x["path"] for x in m] == ["/up/a/data_1.dat", "/up/a/data_2.txt"]
    m, _ = view.search("a/**", path="/up")
    assert [x["path"] for x in m] == ["/up/a/data_1.dat", "/up/a/data_2.txt", "/up/a/deep",
                                      "/up/a/deep/data_3.dat"]
    m, _ = view.search("data_?.*", path="/up/a")
    assert len(m) == 3
    m, tr = view.search("*.dat", limit=2)
    assert len(m) == 2 and tr is True
    m, tr = view.search("nothing*")
    assert m == [] and tr is False
    with pytest.raises(NotFoundError):
        view.search("*", path="/missing")
    with pytest.raises(ProtocolError):
        view.search("*", limit=0)


def test_search_over_union_reports_sources() -> None:
    v, _ = make_view(("p1", "p2"))
    v.apply("p1", [file("/x/a.dat")])
    v.apply("p2", [file("/x/a.dat"), file("/y/b.dat")])
    m, _ = v.search("*.dat")
    assert [(x["path"], x["sources"]) for x in m] == [("/x/a.dat", ["p1", "p2"]),
                                                      ("/y/b.dat", ["p2"])]


def test_name_search_over_union_walks_each_tree_and_dedupes() -> None:
    v, _ = make_view(("p1", "p2"))
    v.apply("p1", [file("/x/a.dat"), file("/x/b.dat"), file("/f.dat")])
    # p2: /x is a file there, /f.dat a directory with a match below
    v.apply("p2", [file("/x"), file("/f.dat/c.dat"), file("/z/a.dat")])
    m, tr = v.search("*.dat")
    assert [x["path"] for x in m] == ["/f.dat", "/f.dat/c.dat", "/x/a.dat", "/x/b.dat",
                                      "/z/a.dat"] and not tr
    m, tr = v.search("a.dat", limit=1)
    assert [x["path"] for x in m] == ["/x/a.dat"] and tr
    m, tr = v.search("*.dat", limit=5)
    assert len(m) == 5 and not tr


def test_listing_shapes_of_every_kind_and_union_sources() -> None:
    v, _ = make_view(("p1", "p2"))
    v.apply("p1", [file("/d/f", size=3), up("/d/l", "symlink", target="t"), dir_("/d/s")])
    v.apply("p1", [file("/d/s/x")])
    e, cur = v.tree("/d", recursive=False)
    assert [(c["name"], c["type"], c.get("target"), c.get("child_count")) for c in
            e["children"]] == [("f", "file", None, None), ("l", "symlink", "t", None),
                               ("s", "dir", None, 1)]
    assert e["children"][0] == {**v.node("/d/f"), "name": "f"}  # type: ignore[dict-item]
    assert all(c == v.node(c["path"]) for c in e["children"]) and cur is None
    v.apply("p2", [file("/d/f", size=5, mtime=T0 + 1)])
    e, _ = v.tree("/d", recursive=False, only_path=True)
    assert e["children"][0] == {"name": "f", "path": "/d/f", "type": "file"}
    e, _ = v.tree("/d", recursive=False)
    assert e["children"][0]["sources"] == ["p1", "p2"] and e["children"][0]["size"] == 5


def test_listing_json_is_the_text_json_dumps_writes_for_tree() -> None:
    from fustor_fusion.httputil import encode_json
    v, clk = make_view(("p1", "p2"), hot_file_threshold=60.0)
    odd = 'caf\udce9 "q" \\ \u00e9'
    v.apply("p1", [file(f"/d/{odd}", size=2**40, mtime=T0 + 0.123456789),
                   up("/d/l", "symlink", target='t"x'), dir_("/d/s"), file("/d/s/x"),
                   file("/d/hot", mtime=clk.w, write="progress"), file("/d/0", mtime=0)])
    v.apply("p1", scan("a1", "audit", [file("/d/new", mtime=T0 + 5)]))
    v.apply("p2", [file("/other")])
    for limit, cursor in ((None, None), (0, None), (2, None), (100, None)):
        got = v.listing_json("/d", limit=limit, cursor=cursor)
        assert got is not None
        entry, cur = v.tree("/d", recursive=False, limit=limit, cursor=cursor)
        assert got == (encode_json(entry), cur)
    _, cur = v.tree("/d", recursive=False, limit=2)
    entry, cur2 = v.tree("/d", recursive=False, limit=2, cursor=cur)
    assert v.listing_json("/d", limit=2, cursor=cur) == (encode_json(entry), cur2)
    assert v.listing_json("/d/s") == (encode_json(v.tree("/d/s", recursive=False)[0]), None)
    # held by two pipes, a file, too big, absent: None (the caller uses `tree`)
    assert v.listing_json("/") is None and v.listing_json("/d/0") is None
    assert v.listing_json("/d", max_children=3) is None
    assert v.listing_json("/d", max_children=3, limit=3) is not None
    assert v.listing_json("/nope") is None


def test_non_utf8_names_round_trip_through_listing_and_cursor() -> None:
    v, _ = make_view()
    odd = "caf\udce9"                             # os.fsdecode(b"caf\xe9")
    v.apply("p1", [file(f"/d/{odd}"), file("/d/z")])
    e, cur = v.tree("/d", recursive=False, limit=1)
    assert _names(e) == [odd]
    e, cur = v.tree("/d", recursive=False, limit=1, cursor=cur)
    assert _names(e) == ["z"]
    assert v.node(f"/d/{odd}")["name"] == odd  # type: ignore[index]


def test_stats_blind_spots_suspects_shapes() -> None:
    v, clk = make_view(("p1", "p2"))
    v.apply("p1", [file("/s", mtime=T0, write="progress", size=3)])
    v.apply("p2", scan("a", "audit", [file("/n", size=4)]))
    st = v.stats()
    assert (st["entries"], st["files"], st["directories"], st["total_size"]) == (2, 2, 0, 7)
    assert st["suspects"] == 1 and st["blind_spots"] == 1 and st["conflicts"] == 0
    p1 = st["pipes"]["p1"]
    assert p1["events_applied"] == 1 and p1["snapshot"]["done"] is False
    assert st["pipes"]["p2"]["audits"]["incremental"]["entries"] == 1
    assert v.blind_spots() == {"additions": [{"path": "/n", "pipe": "p2", "at": clk.w}],
                               "deletions": []}
    assert v.suspects() == [{"path": "/s", "pipe": "p1", "mtime": T0, "expires_in": 60.0}]
    with pytest.raises(NotFoundError):
        v.tree_of("nope")
    with pytest.raises(NotFoundError):
        v.apply("nope", [])


def test_tree_of_a_very_deep_chain() -> None:
    v, _ = make_view(max_tree_items=10_000)
    deep = "/" + "/".join(["d"] * 2000)
    v.apply("p1", [file(deep + "/leaf")])
    e, _ = v.tree("/")
    depth = 0
    while e.get("children"):
        (e,) = e["children"]
        depth += 1
    assert depth == 2001 and e["name"] == "leaf"
    m, _ = v.search("leaf")
    assert [x["path"] for x in m] == [deep + "/leaf"]
