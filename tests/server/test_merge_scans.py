"""Scan rules (DESIGN §6 rules 4–6, 8–9, 11) and their races with realtime events."""

from __future__ import annotations

from fusion_rows import (
    T0,
    delete,
    dir_,
    done,
    end,
    file,
    make_view,
    missing,
    move,
    scan,
    start,
)

from fustor.protocol import ScanEnd, ScanStart


def test_scan_row_older_than_realtime_event_is_dropped() -> None:
    v, _ = make_view()
    v.apply("p1", [file("/f", mtime=T0 + 10, size=1)])
    v.apply("p1", scan("a1", "audit", [file("/f", mtime=T0 + 5, size=2)]))
    assert v.node("/f")["size"] == 1  # type: ignore[index]
    v.apply("p1", scan("a2", "audit", [file("/f", mtime=T0 + 10, size=3)]))   # equal: dropped
    assert v.node("/f")["size"] == 1  # type: ignore[index]
    v.apply("p1", scan("a3", "audit", [file("/f", mtime=T0 + 11, size=4)]))   # newer: applied
    assert v.node("/f")["size"] == 4 and v.stats()["total_size"] == 4  # type: ignore[index]


def test_scan_update_never_touches_confirmed_at() -> None:
    v, clk = make_view()
    v.apply("p1", [dir_("/d"), file("/d/f", mtime=T0)])
    clk.advance(10)
    v.apply("p1", [start("a2", "find")])
    clk.advance(10)
    # a1's newer row updates the attributes, but is no realtime fact newer than a2's start
    v.apply("p1", [start("a1", "audit"), file("/d/f", mtime=T0 + 1, size=9, scan="a1")])
    assert v.node("/d/f")["size"] == 9  # type: ignore[index]
    v.apply("p1", [done("a2", "/d"), end("a2"), end("a1")])
    assert v.node("/d/f") is None


def test_scan_type_change_applies_even_with_older_mtime() -> None:
    v, _ = make_view()
    v.apply("p1", scan("s", "snapshot", [file("/x", mtime=T0 + 50, size=3)]))
    v.apply("p1", scan("a", "audit", [dir_("/x", mtime=T0 + 1)]))
    assert v.node("/x")["type"] == "dir"  # type: ignore[index]
    assert v.stats()["files"] == 0 and v.stats()["total_size"] == 0


def test_stale_scan_row_after_delete_is_dropped_and_recreation_accepted() -> None:
    v, clk = make_view()
    v.apply("p1", [file("/f", mtime=clk.w - 50)])
    v.apply("p1", [start("a1", "audit")])
    v.apply("p1", [delete("/f")])                       # the audit listed /f just before this
    v.apply("p1", [file("/f", mtime=clk.w - 50, scan="a1")])
    assert v.node("/f") is None
    t = v.tree_of("p1")
    wm = t.tombstones["/f"][0]
    # a row whose mtime is newer than the tombstone's watermark: the file was re-created
    v.apply("p1", [file("/f", mtime=wm + 1, size=7, scan="a1")])
    assert v.node("/f")["size"] == 7  # type: ignore[index]
    assert "/f" not in t.tombstones


def test_stale_scan_row_under_deleted_directory_does_not_resurrect_it() -> None:
    v, clk = make_view()
    v.apply("p1", [dir_("/d", mtime=clk.w - 60), file("/d/a", mtime=clk.w - 60)])
    v.apply("p1", [start("a1", "audit"), delete("/d")])
    v.apply("p1", [file("/d/a", mtime=clk.w - 60, scan="a1"),
                   file("/d/b", mtime=clk.w - 60, scan="a1")])
    assert v.node("/d") is None and v.stats()["entries"] == 0


def test_scan_row_under_a_file_is_dropped() -> None:
    v, _ = make_view()
    v.apply("p1", [file("/x", mtime=T0 + 100)])
    v.apply("p1", scan("a", "audit", [file("/x/y", mtime=T0)]))
    assert v.node("/x")["type"] == "file" and v.node("/x/y") is None  # type: ignore[index]


def test_scan_row_under_unknown_parent_creates_placeholders() -> None:
    v, _ = make_view()
    v.apply("p1", scan("s", "snapshot", [file("/p/q/r", mtime=T0)]))
    assert v.node("/p/q")["type"] == "dir"  # type: ignore[index]
    v.apply("p1", scan("s2", "snapshot", [dir_("/p/q", mtime=T0 - 1000)]))
    assert v.node("/p/q")["mtime"] == T0 - 1000  # type: ignore[index]


def test_parent_mtime_check_drops_rows_older_than_a_seen_change() -> None:
    v, _ = make_view()
    v.apply("p1", [dir_("/d", mtime=T0 + 20)])          # realtime: /d changed at T0+20
    v.apply("p1", scan("a", "audit", [
        file("/d/old", mtime=T0, parent_mtime=T0 + 10),  # listed before that change
        file("/d/new", mtime=T0, parent_mtime=T0 + 20),  # listed after it
    ]))
    assert v.node("/d/old") is None
    assert v.node("/d/new") is not None


def test_audit_and_find_mark_blind_spot_additions_snapshot_does_not() -> None:
    v, _ = make_view()
    v.apply("p1", scan("s", "snapshot", [file("/a", mtime=T0), file("/b", mtime=T0)]))
    assert v.blind_spots() == {"additions": [], "deletions": []}
    v.apply("p1", scan("a", "audit", [file("/a", mtime=T0), file("/b", mtime=T0 + 1),
                                      file("/c", mtime=T0)]))
    adds = sorted(x["path"] for x in v.blind_spots()["additions"])
    assert adds == ["/b", "/c"]                          # changed mtime, new; /a unchanged
    assert v.node("/c")["blind_spot"] == "added"  # type: ignore[index]
    assert v.node("/a")["blind_spot"] is None  # type: ignore[index]
    v.apply("p1", scan("f", "find", [file("/e", mtime=T0)]))
    assert v.node("/e")["blind_spot"] == "added"  # type: ignore[index]
    # realtime clears the mark
    v.apply("p1", [file("/c", mtime=T0 + 3)])
    assert v.node("/c")["blind_spot"] is None  # type: ignore[index]
    assert v.stats()["blind_spots"] == 2


def test_find_marks_new_files_suspect() -> None:
    v, _ = make_view()
    v.apply("p1", scan("f", "find", [dir_("/d", mtime=T0), file("/d/x", mtime=T0)]))
    assert v.node("/d/x")["integrity_suspect"] is True  # type: ignore[index]
    assert v.node("/d")["integrity_suspect"] is False  # type: ignore[index]


def test_hot_scan_rows_are_suspect() -> None:
    v, clk = make_view(hot_file_threshold=60.0)
    v.apply("p1", scan("s", "snapshot", [file("/hot", mtime=clk.w - 10),
                                         file("/cold", mtime=clk.w - 600),
                                         dir_("/hotdir", mtime=clk.w - 1)]))
    assert [s["path"] for s in v.suspects()] == ["/hot"]
    # also an existing entry whose scan row brings nothing new, when still hot
    v.apply("p1", [file("/warm", mtime=clk.w - 30)])
    v.apply("p1", scan("a", "audit", [file("/warm", mtime=clk.w - 30)]))
    assert sorted(s["path"] for s in v.suspects()) == ["/hot", "/warm"]


def test_missing_items_removed_at_dir_done_as_blind_spot_deletions() -> None:
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [dir_("/d"), dir_("/d/sub"), file("/d/sub/z"),
                                         file("/d/a"), file("/d/b"), file("/d/c")],
                       dirs=["/d/sub", "/d", "/"]))
    clk.advance(5)
    v.apply("p1", [start("a1", "audit"), file("/d/a", scan="a1"), done("a1", "/d")])
    assert v.node("/d/a") is not None
    for p in ("/d/b", "/d/c", "/d/sub", "/d/sub/z"):
        assert v.node(p) is None
    dels = sorted(x["path"] for x in v.blind_spots()["deletions"])
    assert dels == ["/d/b", "/d/c", "/d/sub"]
    assert v.stats()["entries"] == 2
    v.apply("p1", [end("a1")])


def test_missing_item_exceptions_skipped_tombstoned_confirmed_after_start() -> None:
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [dir_("/skip"), file("/skip/k"), dir_("/d"),
                                         file("/d/tomb")]))
    t = v.tree_of("p1")
    t.tombstones["/d/tomb"] = (T0, clk.w)       # e.g. a delete racing the removal
    clk.advance(5)
    v.apply("p1", [start("a1", "audit")])
    clk.advance(1)
    v.apply("p1", [file("/d/rt", mtime=T0)])      # realtime after the audit started
    v.apply("p1", [done("a1", "/skip", skipped=True), done("a1", "/d"), end("a1")])
    assert v.node("/skip/k") is not None
    assert v.node("/d/tomb") is not None
    assert v.node("/d/rt") is not None
    assert v.blind_spots()["deletions"] == []


def test_cp_p_of_old_file_during_audit_survives_audit_end() -> None:
    """`cp -p` brings a new file with an old mtime via realtime while an audit runs; the audit
    did not list it, but its confirmed_at is later than the audit's start."""
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [dir_("/d", mtime=T0), file("/d/a", mtime=T0)]))
    clk.advance(60)
    v.apply("p1", [start("a1", "audit"), dir_("/d", mtime=T0, scan="a1"),
                   file("/d/a", mtime=T0, scan="a1")])
    clk.advance(1)
    v.apply("p1", [file("/d/copy", mtime=T0 - 86400 * 365, size=5, write="complete"),
                   dir_("/d", mtime=clk.w)])
    clk.advance(1)
    v.apply("p1", [done("a1", "/d"), done("a1", "/"), end("a1")])
    assert v.node("/d/copy")["size"] == 5  # type: ignore[index]
    assert v.blind_spots()["deletions"] == []


def test_realtime_under_unknown_parent_during_audit_survives() -> None:
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [dir_("/d")]))
    clk.advance(5)
    v.apply("p1", [start("a1", "audit")])
    clk.advance(1)
    v.apply("p1", [file("/newdir/f")])           # /newdir comes as a placeholder
    v.apply("p1", [done("a1", "/"), end("a1")])
    assert v.node("/newdir/f") is not None


def test_entry_known_before_scan_start_and_not_seen_is_removed() -> None:
    v, clk = make_view()
    v.apply("p1", [dir_("/d"), file("/d/gone")])      # realtime, before the audit
    clk.advance(5)
    v.apply("p1", [start("a1", "audit"), done("a1", "/d"), end("a1")])
    assert v.node("/d/gone") is None
    assert [x["path"] for x in v.blind_spots()["deletions"]] == ["/d/gone"]


def test_delete_during_audit_is_not_a_blind_spot() -> None:
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [dir_("/d"), file("/d/x"), file("/d/y")]))
    clk.advance(5)
    v.apply("p1", [start("a1", "audit"), file("/d/y", scan="a1")])
    v.apply("p1", [delete("/d/x")])
    v.apply("p1", [file("/d/x", scan="a1"), done("a1", "/d"), end("a1")])
    assert v.node("/d/x") is None and v.node("/d/y") is not None
    assert v.blind_spots() == {"additions": [], "deletions": []}


def test_audit_seeing_deleted_path_again_clears_deletion_mark() -> None:
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [dir_("/d"), file("/d/x")]))
    clk.advance(5)
    v.apply("p1", scan("a1", "audit", [dir_("/d")], dirs=["/d"]))
    assert [x["path"] for x in v.blind_spots()["deletions"]] == ["/d/x"]
    clk.advance(5)
    v.apply("p1", scan("a2", "audit", [dir_("/d"), file("/d/x")], dirs=["/d"]))
    bs = v.blind_spots()
    assert bs["deletions"] == [] and [x["path"] for x in bs["additions"]] == ["/d/x"]


def test_sentinel_missing_removes_entry() -> None:
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [file("/f"), file("/g")]))
    clk.advance(5)
    v.apply("p1", [start("se", "sentinel"), missing("se", "/f"), missing("se", "/nope"),
                   end("se")])
    assert v.node("/f") is None and v.node("/g") is not None
    assert [x["path"] for x in v.blind_spots()["deletions"]] == ["/f"]


def test_tombstone_ttl_purged_at_audit_end() -> None:
    v, clk = make_view(tombstone_ttl_sec=3600.0)
    t = v.tree_of("p1")
    v.apply("p1", [delete("/old")])
    clk.advance(3000)
    v.apply("p1", [delete("/young")])
    clk.advance(700)                              # /old is 3700 s old, /young 700 s
    v.apply("p1", [start("a1", "audit")])
    v.apply("p1", [end("a1")])
    assert list(t.tombstones) == ["/young"]
    clk.advance(3000)
    v.apply("p1", scan("f1", "find", []))          # only audits purge
    assert list(t.tombstones) == ["/young"]


def test_expire_purges_old_tombstones_only_before_running_scans() -> None:
    v, clk = make_view(tombstone_ttl_sec=100.0)
    t = v.tree_of("p1")
    v.apply("p1", [delete("/a")])
    clk.advance(10)
    v.apply("p1", [start("a1", "full_audit")])   # started after /a's tombstone
    clk.advance(10)
    v.apply("p1", [delete("/b")])
    clk.advance(500)
    v.expire()
    assert list(t.tombstones) == ["/b"]          # /b may still protect against a1's rows
    v.apply("p1", [end("a1")])                   # audit end purges by TTL
    assert t.tombstones == {}


def test_snapshot_progress_hook_and_done() -> None:
    v, clk = make_view()
    calls: list[tuple[str, ScanEnd, ScanStart]] = []
    v.on_scan_end = lambda pid, e, s: calls.append((pid, e, s))
    assert not v.snapshot_done("p1")
    v.apply("p1", [start("s1", "snapshot"), file("/a", scan="s1"), file("/b", scan="s1")])
    prog = v.scan_progress("p1")
    assert prog["snapshot_running"] and not prog["snapshot_done"]
    assert prog["running"][0]["kind"] == "snapshot" and prog["running"][0]["entries"] == 2
    assert v.stats()["pipes"]["p1"]["snapshot"]["running"] is True
    assert not v.snapshot_done("p1")
    clk.advance(3)
    v.apply("p1", [end("s1", entries=2)])
    assert v.snapshot_done("p1")
    assert len(calls) == 1 and calls[0][0] == "p1" and calls[0][2].kind == "snapshot"
    fin = v.scan_progress("p1")["finished"]["snapshot"]
    assert fin["duration_sec"] == 3 and fin["entries"] == 2
    assert v.stats()["pipes"]["p1"]["snapshot"] == {
        "running": False, "done": True, "entries": 2, "started": clk.w - 3, "finished": clk.w}


def test_find_job_hook_receives_job_id() -> None:
    v, _ = make_view()
    seen: list[str | None] = []
    v.on_scan_end = lambda pid, e, s: seen.append(s.job_id)
    v.apply("p1", [start("f1", "find", "/x", job_id="j-1"), end("f1")])
    assert seen == ["j-1"]
    v.apply("p1", [end("never-started")])         # ignored
    assert seen == ["j-1"]


def test_audit_stats_record_last_runs() -> None:
    v, clk = make_view()
    v.apply("p1", [start("a1", "audit")])
    clk.advance(2)
    v.apply("p1", [file("/n", scan="a1"), end("a1")])
    a = v.stats()["pipes"]["p1"]["audits"]
    assert a["incremental"]["duration_sec"] == 2 and a["incremental"]["entries"] == 1
    assert a["full"] is None


def test_rows_of_unknown_scan_apply_under_scan_rules() -> None:
    v, _ = make_view()
    v.apply("p1", [file("/f", mtime=T0 + 5, size=1)])
    v.apply("p1", [file("/f", mtime=T0, size=2, scan="zzz"), file("/g", scan="zzz")])
    assert v.node("/f")["size"] == 1 and v.node("/g") is not None  # type: ignore[index]
    assert v.stats()["pipes"]["p1"]["orphan_rows"] == 2


def test_entry_moved_in_during_audit_survives_audit_end() -> None:
    v, clk = make_view()
    v.apply("p1", scan("s", "snapshot", [dir_("/d"), file("/d/a"), dir_("/e")]))
    clk.advance(10)
    v.apply("p1", [start("a1", "audit"), dir_("/e", scan="a1")])
    clk.advance(1)
    v.apply("p1", [move("/d", "/moved")])        # after the audit listed /
    v.apply("p1", [done("a1", "/"), end("a1")])
    assert v.node("/moved/a") is not None
    assert v.blind_spots()["deletions"] == []


def test_only_a_snapshot_makes_the_pipe_ready() -> None:
    v, _ = make_view()
    v.apply("p1", scan("a", "full_audit", [file("/x")]))
    v.apply("p1", scan("f", "find", [file("/y")]))
    assert not v.snapshot_done("p1")
    v.apply("p1", scan("s", "snapshot", [file("/x")], ))
    assert v.snapshot_done("p1")


def test_blind_spot_lists_are_bounded_keeping_the_newest(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fustor_fusion.marks as marks
    monkeypatch.setattr(marks, "BLIND_SPOT_CAP", 3)
    v, clk = make_view()
    v.apply("p1", scan("a", "audit", [file(f"/f{i}") for i in range(5)]))
    assert [x["path"] for x in v.blind_spots()["additions"]] == ["/f2", "/f3", "/f4"]
    assert v.stats()["pipes"]["p1"]["blind_spots_dropped"] == 2


def test_new_leader_scan_abandons_the_previous_ones() -> None:
    v, clk = make_view()
    ends: list[tuple[str, bool, str | None]] = []
    v.on_scan_end = lambda pid, e, s: ends.append((s.scan, e.ok, e.error))
    v.apply("p1", scan("s0", "snapshot", [dir_("/d"), file("/d/x")]))
    ends.clear()
    v.apply("p1", [start("old", "audit"), file("/d/x", scan="old"),
                   start("se1", "sentinel"), start("f1", "find", "/d", job_id="j")])
    clk.advance(5)
    v.apply("p1", [start("snap2", "snapshot")])
    assert [e[0] for e in ends] == ["old"] and ends[0][1] is False
    assert "superseded" in (ends[0][2] or "")
    # the abandoned audit removes nothing, even when its DirDone arrives late
    v.apply("p1", [done("old", "/d"), done("old", "/")])
    assert v.node("/d/x") is not None
    assert sorted(v.tree_of("p1").scans) == ["f1", "se1", "snap2"]
    v.apply("p1", [start("se2", "sentinel")])
    assert ends[-1][0] == "se1"


def test_idle_and_aborted_scans_end_as_failed() -> None:
    v, clk = make_view()
    ends: list[tuple[str, str | None]] = []
    v.on_scan_end = lambda pid, e, s: ends.append((s.scan, s.job_id))
    v.apply("p1", [start("f1", "find", "/", job_id="j-1"), start("s1", "snapshot")])
    clk.advance(1800)
    v.apply("p1", [file("/a", scan="s1")])
    clk.advance(1801)
    v.expire()
    assert ends == [("f1", "j-1")]
    assert v.scan_progress("p1")["finished"]["find"]["ok"] is False
    assert v.abort_scans("p1") == 1 and ends[-1] == ("s1", None)
    assert not v.snapshot_done("p1") and v.scan_progress("p1")["running"] == []


def test_blind_chmod_and_backdating_converge_through_ctime() -> None:
    v, _ = make_view()
    v.apply("p1", [file("/f", mtime=T0, ctime=T0, mode=0o644),
                   file("/g", mtime=T0, ctime=T0, size=1)])
    v.apply("p1", scan("a", "audit", [
        file("/f", mtime=T0, ctime=T0 + 5, mode=0o600),          # chmod on another host
        file("/g", mtime=T0 - 9999, ctime=T0 + 5, size=1),       # touch -d past there
    ]))
    assert v.node("/f")["mode"] == 0o600  # type: ignore[index]
    assert v.node("/g")["mtime"] == T0 - 9999  # type: ignore[index]
    assert sorted(x["path"] for x in v.blind_spots()["additions"]) == ["/f", "/g"]
    # a row older in both times than what we hold is still refused
    v.apply("p1", [file("/f", mtime=T0 + 20, ctime=T0 + 20, mode=0o640)])
    v.apply("p1", scan("a2", "audit", [file("/f", mtime=T0, ctime=T0 + 5, mode=0o600)]))
    assert v.node("/f")["mode"] == 0o640  # type: ignore[index]


def test_cp_p_recreation_after_delete_passes_the_tombstone_by_ctime() -> None:
    v, clk = make_view()
    v.apply("p1", [file("/f", mtime=clk.w - 500, ctime=clk.w - 500), delete("/f")])
    wm = v.tree_of("p1").tombstones["/f"][0]
    v.apply("p1", scan("a", "audit", [file("/f", mtime=wm - 5000, ctime=wm + 2, size=8)]))
    assert v.node("/f")["size"] == 8  # type: ignore[index]
    v.apply("p1", [delete("/f")])
    wm = v.tree_of("p1").tombstones["/f"][0]
    v.apply("p1", scan("a2", "audit", [file("/f", mtime=wm - 5000, ctime=wm - 1, size=9)]))
    assert v.node("/f") is None


def test_a_failed_snapshot_does_not_make_the_pipe_ready() -> None:
    # The agent ends a snapshot of an absent or unmounted source with ok=false (and retries)
    # precisely so that the source never looks empty: Fusion must not serve it as ready.
    v, _ = make_view()
    v.apply("p1", [start("s1", "snapshot"), end("s1", ok=False)])
    assert not v.snapshot_done("p1")
    assert v.scan_progress("p1")["finished"]["snapshot"]["ok"] is False
    v.apply("p1", scan("s2", "snapshot", [file("/x")]))
    assert v.snapshot_done("p1")
    v.apply("p1", [start("s3", "snapshot"), end("s3", ok=False)])   # once served, stays served
    assert v.snapshot_done("p1")
