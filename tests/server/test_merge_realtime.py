"""Realtime rules (DESIGN §6 rules 0–3) and the logical clock, on one pipe."""

from __future__ import annotations

from fusion_rows import T0, delete, dir_, file, make_view, move, scan, up


def test_upsert_creates_entry_with_exact_api_json() -> None:
    v, clk = make_view()
    v.apply("p1", [dir_("/a", mtime=T0 + 1),
                   file("/a/x.dat", mtime=T0 + 2.5, size=4096, ctime=T0 + 3, mode=0o640,
                        uid=7, gid=8)])
    assert v.node("/a/x.dat") == {
        "name": "x.dat", "path": "/a/x.dat", "type": "file", "size": 4096,
        "mtime": T0 + 2.5, "ctime": T0 + 3, "mode": 0o640, "uid": 7, "gid": 8,
        "integrity_suspect": False, "sources": ["p1"], "blind_spot": None, "conflict": False,
    }
    a = v.node("/a")
    assert a is not None and a["type"] == "dir" and a["child_count"] == 1
    assert a["mtime"] == T0 + 1 and a["mode"] == 0o755
    assert v.node("/a/nope") is None


def test_symlink_reports_target_not_followed() -> None:
    v, _ = make_view()
    v.apply("p1", [up("/ln", "symlink", target="../elsewhere", mtime=T0)])
    n = v.node("/ln")
    assert n is not None and n["type"] == "symlink" and n["target"] == "../elsewhere"
    assert v.stats()["files"] == 1


def test_unknown_parents_are_created_and_filled_later() -> None:
    v, _ = make_view()
    v.apply("p1", [file("/a/b/c.txt", mtime=T0 + 9)])
    b = v.node("/a/b")
    assert b is not None and b["type"] == "dir" and b["child_count"] == 1
    assert v.stats()["directories"] == 2 and v.stats()["files"] == 1
    # the parent's own row fills the placeholder, even with an older mtime than anything
    v.apply("p1", [dir_("/a/b", mtime=T0 - 500, mode=0o700, uid=3)])
    b = v.node("/a/b")
    assert b is not None and (b["mtime"], b["mode"], b["uid"]) == (T0 - 500, 0o700, 3)
    assert b["child_count"] == 1          # children kept when the dir's record changes


def test_write_progress_marks_suspect_and_complete_clears() -> None:
    v, _ = make_view()
    v.apply("p1", [file("/f", mtime=T0, write="progress")])
    assert v.node("/f")["integrity_suspect"] is True  # type: ignore[index]
    assert [s["path"] for s in v.suspects()] == ["/f"]
    v.apply("p1", [file("/f", mtime=T0 + 1)])           # attribute change: mark stays
    assert v.node("/f")["integrity_suspect"] is True  # type: ignore[index]
    v.apply("p1", [file("/f", mtime=T0 + 2, write="complete")])
    assert v.node("/f")["integrity_suspect"] is False  # type: ignore[index]
    assert v.suspects() == [] and v.stats()["suspects"] == 0


def test_delete_removes_subtree_and_leaves_tombstone() -> None:
    v, clk = make_view()
    v.apply("p1", [dir_("/d"), dir_("/d/e"), file("/d/e/f", size=10), file("/d/g", size=5),
                   file("/keep", size=1)])
    assert v.stats()["entries"] == 5 and v.stats()["total_size"] == 16
    t = v.tree_of("p1")
    t.bs_added["/d/g"] = 1.0
    t.suspects["/d/e/f"] = (1e9, T0)
    v.apply("p1", [delete("/d")])
    assert v.node("/d") is None and v.node("/d/e/f") is None
    st = v.stats()
    assert (st["entries"], st["files"], st["directories"], st["total_size"]) == (1, 1, 0, 1)
    wm, at = t.tombstones["/d"]
    assert at == clk.w and wm == t.clock.now(clk.w)
    assert not t.bs_added and not t.suspects


def test_delete_of_unknown_path_only_tombstones() -> None:
    v, _ = make_view()
    v.apply("p1", [delete("/never/seen")])
    assert "/never/seen" in v.tree_of("p1").tombstones
    assert v.node("/never") is None


def test_move_subtree_in_one_step() -> None:
    v, clk = make_view()
    v.apply("p1", [dir_("/src", mtime=T0 + 1), dir_("/src/sub"), file("/src/sub/a", size=3),
                   file("/src/b", size=4, write="progress"), dir_("/dst")])
    before = v.stats()
    v.apply("p1", [move("/src", "/dst/moved")])
    assert v.node("/src") is None and v.node("/src/sub/a") is None
    moved = v.node("/dst/moved")
    assert moved is not None and moved["mtime"] == T0 + 1 and moved["child_count"] == 2
    assert v.node("/dst/moved/sub/a")["size"] == 3  # type: ignore[index]
    after = v.stats()
    for k in ("entries", "files", "directories", "total_size"):
        assert after[k] == before[k]
    t = v.tree_of("p1")
    assert "/src" in t.tombstones
    # a suspect below a moved directory follows it
    assert list(t.suspects) == ["/dst/moved/b"]


def test_move_file_over_existing_and_clears_its_suspect() -> None:
    v, _ = make_view()
    v.apply("p1", [file("/tmp.part", size=9, write="progress"), file("/final", size=1)])
    v.apply("p1", [move("/tmp.part", "/final")])
    assert v.node("/tmp.part") is None
    f = v.node("/final")
    assert f is not None and f["size"] == 9 and f["integrity_suspect"] is False
    assert v.stats()["files"] == 1 and v.stats()["total_size"] == 9


def test_move_of_unknown_source_moves_nothing() -> None:
    v, _ = make_view()
    v.apply("p1", [move("/ghost", "/here")])
    assert v.node("/here") is None and "/ghost" in v.tree_of("p1").tombstones
    # the agent follows with upserts for the destination
    v.apply("p1", [file("/here", size=2)])
    assert v.node("/here")["size"] == 2  # type: ignore[index]


def test_move_destination_clears_tombstones_below_it() -> None:
    v, _ = make_view()
    v.apply("p1", [dir_("/d"), file("/d/x"), delete("/d"), dir_("/s"), file("/s/x")])
    t = v.tree_of("p1")
    t.tombstones["/d/x"] = (T0 + 1e6, 0.0)
    v.apply("p1", [move("/s", "/d")])
    assert "/d" not in t.tombstones and "/d/x" not in t.tombstones
    assert v.node("/d/x") is not None


def test_realtime_upsert_clears_tombstone_and_blind_spot_marks() -> None:
    v, _ = make_view()
    t = v.tree_of("p1")
    v.apply("p1", [dir_("/d"), file("/d/f"), delete("/d")])
    t.bs_deleted["/d/f"] = 1.0
    assert "/d" in t.tombstones
    v.apply("p1", [file("/d/f", mtime=T0 + 5)])
    assert "/d" not in t.tombstones          # the parent exists again, by a realtime fact
    assert "/d/f" not in t.bs_deleted
    assert v.node("/d/f") is not None


def test_directory_replaced_by_file() -> None:
    v, _ = make_view()
    v.apply("p1", [dir_("/x"), file("/x/a", size=5), file("/x/b", size=6)])
    v.apply("p1", [file("/x", size=1, mtime=T0 + 10)])
    assert v.node("/x")["type"] == "file"  # type: ignore[index]
    assert v.node("/x/a") is None
    st = v.stats()
    assert (st["entries"], st["files"], st["directories"], st["total_size"]) == (1, 1, 0, 1)
    v.apply("p1", [dir_("/x", mtime=T0 + 20), file("/x/c", size=2)])
    st = v.stats()
    assert (st["entries"], st["files"], st["directories"], st["total_size"]) == (2, 1, 1, 2)


def test_logical_clock_follows_realtime_mtimes_not_future_outliers() -> None:
    v, clk = make_view()
    t = v.tree_of("p1")
    assert t.watermark == clk.w              # no samples: Fusion time
    # storage clock runs 100 s behind Fusion
    v.apply("p1", [file(f"/f{i}", mtime=clk.w - 100) for i in range(5)])
    assert t.watermark == clk.w - 100
    v.apply("p1", [file("/future", mtime=clk.w + 10 * 86400)])
    assert t.watermark == clk.w - 100
    clk.advance(30)
    assert t.watermark == clk.w - 100
    assert v.stats()["pipes"]["p1"]["logical_clock"] == clk.w - 100


def test_root_row_sets_root_attrs_and_is_not_counted() -> None:
    v, _ = make_view()
    v.apply("p1", [dir_("/", mtime=T0 + 7, mode=0o711), file("/a")])
    root = v.node("/")
    assert root is not None and root["mtime"] == T0 + 7 and root["mode"] == 0o711
    assert root["child_count"] == 1 and v.stats()["entries"] == 1
    v.apply("p1", [delete("/")])                  # the source root cannot be removed
    assert v.node("/a") is not None


def test_move_directory_over_an_existing_directory_replaces_it() -> None:
    # rename(2) of a directory onto an (empty) directory: the moved subtree takes its place
    v, _ = make_view()
    v.apply("p1", [dir_("/a", mtime=T0 + 1), dir_("/a/sub"), file("/a/sub/f", size=3),
                   file("/a/g", size=4), dir_("/b", mtime=T0 + 2), file("/b/stale", size=5)])
    v.apply("p1", [move("/a", "/b")])
    assert v.node("/a") is None and v.node("/b/stale") is None
    b = v.node("/b")
    assert b is not None and b["mtime"] == T0 + 1 and b["child_count"] == 2
    assert v.node("/b/sub/f")["size"] == 3  # type: ignore[index]
    assert v.node("/b/g")["size"] == 4  # type: ignore[index]
    s = v.stats()
    assert (s["entries"], s["files"], s["directories"], s["total_size"]) == (4, 2, 2, 7)


def test_move_destination_keeps_tombstones_of_paths_the_move_did_not_bring() -> None:
    v, _ = make_view()
    v.apply("p1", [dir_("/d"), file("/d/x"), file("/d/y"), delete("/d/y"), delete("/d"),
                   dir_("/s"), file("/s/x")])
    v.apply("p1", [move("/s", "/d")])
    t = v.tree_of("p1")
    assert "/d/x" not in t.tombstones and "/d/y" in t.tombstones
    # a scan row for /d/y listed before its delete is still refused
    v.apply("p1", scan("a", "audit", [file("/d/y", mtime=T0)]))
    assert v.node("/d/y") is None and v.node("/d/x") is not None


def test_deleting_an_empty_directory_keeps_marks_elsewhere() -> None:
    v, _ = make_view()
    v.apply("p1", [dir_("/e"), file("/e2/f", write="progress"), file("/e/g", write="progress"),
                   delete("/e/g"), delete("/e"), move("/e2/f", "/e3")])
    t = v.tree_of("p1")
    assert list(t.suspects) == []
    v.apply("p1", [file("/k/a", write="progress"), file("/k/b", write="progress"),
                   dir_("/j"), move("/k", "/j")])
    assert sorted(t.suspects) == ["/j/a", "/j/b"]


def test_directory_replaced_by_file_takes_the_marks_of_its_subtree_along() -> None:
    v, _ = make_view()
    t = v.tree_of("p1")
    v.apply("p1", [dir_("/x"), file("/x/a", write="progress"), dir_("/y"),
                   file("/y/b", write="progress"), file("/keep", write="progress")])
    v.apply("p1", scan("a", "audit", [file("/x/new", mtime=T0 + 1), file("/y/new", mtime=T0 + 1)]))
    assert sorted(t.bs_added) == ["/x/new", "/y/new"]
    v.apply("p1", [file("/x", mtime=T0 + 10)])                       # realtime
    v.apply("p1", scan("a2", "audit", [file("/y", mtime=T0 - 500)]))  # a scan row (not hot)
    assert sorted(t.suspects) == ["/keep"]
    assert sorted(t.bs_added) == ["/y"]
    assert v.stats()["suspects"] == 1 and v.stats()["blind_spots"] == 1
