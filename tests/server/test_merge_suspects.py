"""Suspect lifecycle (DESIGN §6 rule 7) with injected wall and monotonic clocks."""

from __future__ import annotations

from fusion_rows import T0, FakeClock, file, make_view, scan, start


def _suspect(v, path):  # type: ignore[no-untyped-def]
    return {s["path"]: s for s in v.suspects()}.get(path)


def test_expiry_clears_unchanged_and_renews_changed() -> None:
    v, clk = make_view(suspect_ttl_sec=60.0)
    v.apply("p1", [file("/f", mtime=T0, write="progress")])
    s = _suspect(v, "/f")
    assert s is not None and s["mtime"] == T0 and s["expires_in"] == 60.0
    clk.advance(59)
    v.expire()
    assert _suspect(v, "/f") is not None
    # still being written: an inotify modify updates the mtime, the mark stays
    v.apply("p1", [file("/f", mtime=T0 + 59, write="progress")])
    clk.advance(30)
    v.expire()
    assert _suspect(v, "/f")["expires_in"] == 30.0  # type: ignore[index]
    # attribute-only realtime row changes the mtime without renewing; at expiry it renews
    v.apply("p1", [file("/f", mtime=T0 + 80)])
    clk.advance(30)
    v.expire()
    s = _suspect(v, "/f")
    assert s is not None and s["mtime"] == T0 + 80 and s["expires_in"] == 60.0
    clk.advance(60)
    v.expire()
    assert _suspect(v, "/f") is None
    assert v.node("/f")["integrity_suspect"] is False  # type: ignore[index]


def test_expiry_uses_monotonic_clock_not_wall() -> None:
    clk = FakeClock()
    v, _ = make_view(clock=clk, suspect_ttl_sec=60.0)
    v.apply("p1", [file("/f", mtime=T0, write="progress")])
    clk.w += 10_000                      # the wall clock jumps; monotonic time does not
    v.expire()
    assert _suspect(v, "/f") is not None
    clk.m += 61
    v.expire()
    assert _suspect(v, "/f") is None


def test_deleted_suspect_is_forgotten() -> None:
    v, clk = make_view()
    v.apply("p1", [file("/f", write="progress")])
    v.apply("p1", [file("/f", write="progress")])        # two heap items, one mark
    v.tree_of("p1").remove("/f")
    clk.advance(1000)
    v.expire()
    assert v.suspects() == []


def test_sentinel_clears_cooled_and_renews_active() -> None:
    v, clk = make_view(hot_file_threshold=60.0, suspect_ttl_sec=600.0)
    w = clk.w
    v.apply("p1", [file("/cool", mtime=w - 30, write="progress"),
                   file("/busy", mtime=w - 30, write="progress"),
                   file("/young", mtime=w - 5, write="progress")])
    clk.advance(100)
    targets = v.sentinel_targets("p1")
    assert sorted(targets["suspects"]) == ["/busy", "/cool", "/young"]
    v.apply("p1", scan("se", "sentinel", [
        file("/cool", mtime=w - 30),          # unchanged since marked, now 130 s old: cooled
        file("/busy", mtime=w + 90),          # modified again: renewed with the new mtime
    ]))
    assert _suspect(v, "/cool") is None
    b = _suspect(v, "/busy")
    assert b is not None and b["mtime"] == w + 90 and b["expires_in"] == 600.0
    assert v.node("/busy")["mtime"] == w + 90  # type: ignore[index]
    assert _suspect(v, "/young") is not None
    # unchanged but still hot: kept
    clk.advance(1)
    v.apply("p1", scan("se2", "sentinel", [file("/busy", mtime=w + 90)]))
    assert _suspect(v, "/busy") is not None


def test_sentinel_targets_recent_files_newest_first() -> None:
    v, clk = make_view()
    w = clk.w
    v.apply("p1", [file("/a", mtime=w - 100), file("/b", mtime=w - 10),
                   file("/old", mtime=w - 3 * 86400)])
    v.apply("p1", scan("s", "snapshot", [file("/c", mtime=w - 50)]))
    assert v.sentinel_targets("p1")["recent"] == ["/b", "/c", "/a"]
    assert v.sentinel_targets("p1", limit=2)["recent"] == ["/b", "/c"]
    v.apply("p1", [start("x", "audit")])
    v.tree_of("p1").remove("/b")
    assert v.sentinel_targets("p1")["recent"] == ["/c", "/a"]


def test_recent_structure_is_bounded() -> None:
    from fustor_fusion.marks import RECENT_CAP
    v, clk = make_view()
    rows = [file(f"/f{i}", mtime=clk.w - 20000 + i) for i in range(RECENT_CAP + 10)]
    v.apply("p1", rows)
    t = v.tree_of("p1")
    assert len(t.recent) <= RECENT_CAP
    top = v.sentinel_targets("p1", limit=3)["recent"]
    assert top == [f"/f{RECENT_CAP + 9}", f"/f{RECENT_CAP + 8}", f"/f{RECENT_CAP + 7}"]


def test_recent_keeps_the_newest_whatever_the_order_rows_come_in() -> None:
    import random

    from fustor_fusion.marks import RECENT_CAP
    v, clk = make_view()
    n = 3 * RECENT_CAP
    order = list(range(n))
    random.Random(7).shuffle(order)
    v.apply("p1", [file(f"/f{i}", mtime=clk.w - 20000 + i) for i in order])
    t = v.tree_of("p1")
    assert RECENT_CAP // 2 <= len(t.recent) <= RECENT_CAP
    want = [f"/f{i}" for i in range(n - 1, n - 1 - RECENT_CAP // 2, -1)]
    assert v.sentinel_targets("p1", limit=RECENT_CAP // 2)["recent"] == want


def test_sentinel_renews_a_changed_file_even_when_not_hot() -> None:
    v, clk = make_view(hot_file_threshold=60.0, suspect_ttl_sec=600.0)
    w = clk.w
    v.apply("p1", [file("/f", mtime=w, write="progress")])
    clk.advance(300)
    # written again on another NFS client at w+100: changed since marking, but 200 s old
    v.apply("p1", scan("se", "sentinel", [file("/f", mtime=w + 100)]))
    s = _suspect(v, "/f")
    assert s is not None and s["mtime"] == w + 100 and s["expires_in"] == 600.0
    clk.advance(1)
    v.apply("p1", scan("se2", "sentinel", [file("/f", mtime=w + 100)]))
    assert _suspect(v, "/f") is None
