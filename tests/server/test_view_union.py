"""Union of pipe trees in one view (DESIGN §3) and the incremental counters behind /stats."""

from __future__ import annotations

import random
from typing import Any

import pytest
from fusion_rows import T0, delete, dir_, file, make_view, move, scan, up

from fustor_fusion.tree import Dir, child_path, rec_of
from fustor_fusion.view import View


def test_directory_exists_if_in_any_pipe_and_children_union() -> None:
    v, _ = make_view(("p1", "p2"))
    v.apply("p1", [dir_("/d", mtime=T0), file("/d/a")])
    v.apply("p2", [dir_("/d", mtime=T0 + 5, mode=0o700), file("/d/b"), dir_("/only2")])
    d = v.node("/d")
    assert d is not None
    assert d["sources"] == ["p1", "p2"] and d["mtime"] == T0 + 5 and d["mode"] == 0o700
    assert d["child_count"] == 2 and d["conflict"] is False
    entry, _ = v.tree("/d", recursive=False)
    assert [c["name"] for c in entry["children"]] == ["a", "b"]
    assert [c["sources"] for c in entry["children"]] == [["p1"], ["p2"]]
    assert v.node("/only2")["sources"] == ["p2"]  # type: ignore[index]


def test_file_in_several_pipes_shows_newest_and_all_sources() -> None:
    v, _ = make_view(("p1", "p2", "p3"))
    v.apply("p1", [file("/f", mtime=T0 + 1, size=1)])
    v.apply("p2", [file("/f", mtime=T0 + 9, size=2)])
    v.apply("p3", [file("/f", mtime=T0 + 4, size=3)])
    f = v.node("/f")
    assert f is not None and f["size"] == 2 and f["sources"] == ["p1", "p2", "p3"]
    st = v.stats()
    assert (st["entries"], st["files"], st["total_size"]) == (1, 1, 2)


def test_dir_vs_file_conflict_shows_directory() -> None:
    v, _ = make_view(("p1", "p2"))
    v.apply("p1", [file("/x", mtime=T0 + 100, size=50)])
    v.apply("p2", [dir_("/x", mtime=T0), file("/x/in", size=1)])
    x = v.node("/x")
    assert x is not None and x["type"] == "dir" and x["conflict"] is True
    assert x["sources"] == ["p1", "p2"] and x["child_count"] == 1
    st = v.stats()
    assert (st["entries"], st["files"], st["directories"], st["total_size"], st["conflicts"]) \
        == (2, 1, 1, 1, 1)
    entry, _ = v.tree("/x")
    assert [c["path"] for c in entry["children"]] == ["/x/in"]
    v.apply("p1", [delete("/x")])
    assert v.node("/x")["conflict"] is False and v.stats()["conflicts"] == 0  # type: ignore[index]


def test_delete_in_one_pipe_removes_only_its_copy() -> None:
    v, _ = make_view(("p1", "p2"))
    for p in ("p1", "p2"):
        v.apply(p, [dir_("/d"), file("/d/f", size=3)])
    v.apply("p1", [delete("/d")])
    f = v.node("/d/f")
    assert f is not None and f["sources"] == ["p2"]
    assert v.stats()["entries"] == 2
    v.apply("p2", [delete("/d/f")])
    assert v.node("/d/f") is None and v.node("/d")["child_count"] == 0  # type: ignore[index]


def test_equal_trees_union_is_the_same_tree() -> None:
    one, _ = make_view(("p1",))
    two, _ = make_view(("p1", "p2"))
    rows = [dir_("/a"), file("/a/x", size=3), up("/a/l", "symlink", target="x"), file("/y", size=4)]
    one.apply("p1", rows)
    for p in ("p1", "p2"):
        two.apply(p, rows)
    a, _ = one.tree("/")
    b, _ = two.tree("/")

    def strip(n: dict[str, Any]) -> dict[str, Any]:
        out = {k: w for k, w in n.items() if k != "sources"}
        if "children" in n:
            out["children"] = [strip(c) for c in n["children"]]
        return out
    assert strip(a) == strip(b)
    for k in ("entries", "files", "directories", "total_size"):
        assert one.stats()[k] == two.stats()[k]


def _brute(v: View) -> tuple[int, int, int, int, int]:
    """Union counters recomputed by walking every tree."""
    trees = [v.tree_of(p) for p in v.pipe_ids]
    paths: set[str] = set()
    for t in trees:
        paths.update(p for p, _ in t.walk("/", t.root) if p != "/")
    e = f = d = size = c = 0
    for p in paths:
        nodes = [n for t in trees if (n := t.get(p)) is not None]
        e += 1
        if any(type(n) is Dir for n in nodes):
            d += 1
            c += any(type(n) is not Dir for n in nodes)
        else:
            f += 1
            best = max(nodes, key=lambda n: __import__("struct").unpack_from("<qd", rec_of(n))[1])
            size += __import__("struct").unpack_from("<q", best)[0] if type(best) is bytes else 0
    return e, f, d, size, c


def _pipe_brute(v: View, pid: str) -> tuple[int, int, int]:
    t = v.tree_of(pid)
    files = dirs = size = 0
    for p, n in t.walk("/", t.root):
        if p == "/":
            continue
        if type(n) is Dir:
            dirs += 1
        else:
            files += 1
            if type(n) is bytes:
                size += __import__("struct").unpack_from("<q", n)[0]
    return files, dirs, size


@pytest.mark.parametrize("pipes", [("p1", "p2"), ("p1", "p2", "p3")])
def test_incremental_counters_match_a_full_recount_under_random_ops(
        pipes: tuple[str, ...]) -> None:
    rng = random.Random(1234)
    v, clk = make_view(pipes)
    names = ["a", "b", "c"]

    def rpath(depth: int = 3) -> str:
        p = "/"
        for _ in range(rng.randint(1, depth)):
            p = child_path(p, rng.choice(names))
        return p
    for step in range(600):
        pid = rng.choice(pipes)
        op = rng.random()
        p = rpath()
        if op < 0.35:
            v.apply(pid, [file(p, mtime=T0 + rng.randint(0, 50), size=rng.randint(0, 99))])
        elif op < 0.55:
            v.apply(pid, [dir_(p, mtime=T0 + rng.randint(0, 50))])
        elif op < 0.7:
            v.apply(pid, [delete(p)])
        elif op < 0.85:
            q = rpath()
            if not (q == p or q.startswith(p + "/")):
                v.apply(pid, [move(p, q)])
        else:
            rows = [file(rpath(), mtime=T0 + rng.randint(0, 80), size=rng.randint(0, 9))
                    for _ in range(3)]
            v.apply(pid, scan(f"s{step}", rng.choice(("audit", "snapshot", "find")), rows,
                              dirs=[rpath(2)]))
        clk.advance(1)
        st = v.stats()
        got = (st["entries"], st["files"], st["directories"], st["total_size"], st["conflicts"])
        assert got == _brute(v), f"step {step}"
        for q in pipes:
            ps = st["pipes"][q]
            assert (ps["files"], ps["directories"], ps["total_size"]) == _pipe_brute(v, q)


def test_add_and_remove_pipe_recount() -> None:
    v, _ = make_view(("p1",))
    v.apply("p1", [dir_("/d"), file("/d/f", size=4)])
    t2 = v.add_pipe("p2")
    t2.apply([dir_("/d"), file("/d/g", size=6)])
    st = v.stats()
    assert (st["entries"], st["total_size"]) == (3, 10)
    v.remove_pipe("p1")
    st = v.stats()
    assert (st["entries"], st["total_size"]) == (2, 6)
    assert v.node("/d/f") is None
