"""The compact tree: records, counters, the parent cache and the sorted-names cache."""

from __future__ import annotations

import random

import pytest
from fusion_rows import T0, attrs

from fustor_fusion.tree import (
    F_PLACEHOLDER,
    I_CONFIRMED,
    I_FLAGS,
    I_GID,
    I_MODE,
    I_MTIME,
    I_SIZE,
    I_UID,
    REC,
    Dir,
    Link,
    Tree,
    flags_of,
    make_node,
    mtime_of_rec,
    parent_of,
    type_of,
)


def test_record_round_trip_and_types() -> None:
    a = attrs("file", size=2**40, mtime=T0 + 0.25, mode=0o4755, uid=2**32 - 1, gid=0)
    rec = make_node(a, 12.5)
    assert type(rec) is bytes and REC.size == 43
    r = REC.unpack(rec)
    assert (r[I_SIZE], r[I_MTIME], r[I_MODE], r[I_UID], r[I_GID], r[I_CONFIRMED], r[I_FLAGS]) \
        == (2**40, T0 + 0.25, 0o4755, 2**32 - 1, 0, 12.5, 0)
    assert type_of(rec) == "file"
    d = make_node(attrs("dir"), 0.0)
    assert isinstance(d, Dir) and type_of(d) == "dir"
    ln = make_node(attrs("symlink", target="t"), 0.0)
    assert isinstance(ln, Link) and ln.target == "t" and type_of(ln) == "symlink"


def test_parent_of() -> None:
    assert parent_of("/a") == ("/", "a")
    assert parent_of("/a/b/c") == ("/a/b", "c")


def test_ensure_dir_creates_placeholders_and_replaces_files() -> None:
    t = Tree()
    t.attach("/x", make_node(attrs("file", size=5), 0.0))
    d = t.ensure_dir("/x/y/z", 7.0)
    assert t.get_dir("/x/y/z") is d
    assert (t.files, t.dirs, t.total_size) == (0, 3, 0)
    r = REC.unpack(t.get("/x/y").rec)  # type: ignore[union-attr]
    assert r[I_FLAGS] & F_PLACEHOLDER and r[I_CONFIRMED] == 7.0


def test_parent_cache_is_dropped_when_directories_go() -> None:
    t = Tree()
    t.attach("/a/b/f", make_node(attrs(), 0.0))
    assert t.get("/a/b/f") is not None                  # caches /a/b
    t.remove("/a")
    assert t.get_dir("/a/b") is None and t.get("/a/b/f") is None
    t.attach("/a/b/g", make_node(attrs(), 0.0))
    assert t.get("/a/b/f") is None and t.get("/a/b/g") is not None


def test_counters_follow_put_remove_and_moves() -> None:
    t = Tree()
    for i in range(10):
        t.attach(f"/d/f{i}", make_node(attrs(size=i), 0.0))
    t.attach("/d/sub/l", make_node(attrs("symlink"), 0.0))
    assert (t.files, t.dirs, t.total_size) == (11, 2, 45)
    t.attach("/d/f3", make_node(attrs(size=100), 0.0))     # replace: size changes
    assert (t.files, t.total_size) == (11, 142)
    node = t.detach("/d/sub")
    assert node is not None and (t.files, t.dirs) == (10, 1)
    t.attach("/e/moved", node)
    assert (t.files, t.dirs) == (11, 3) and t.get("/e/moved/l") is not None
    t.remove("/d")
    assert (t.files, t.dirs, t.total_size) == (1, 2, 0)


def test_observer_sees_every_path_of_a_subtree() -> None:
    t = Tree()
    t.attach("/d/a", make_node(attrs(), 0.0))
    t.attach("/d/s/b", make_node(attrs(), 0.0))
    events: list[tuple[str, bool, bool]] = []
    t.observer = lambda p, old, new: events.append((p, old is not None, new is not None))
    t.remove("/d")
    assert sorted(events) == [("/d", True, False), ("/d/a", True, False),
                              ("/d/s", True, False), ("/d/s/b", True, False)]


@pytest.mark.parametrize("every", [1, 7, 400])
def test_sorted_names_cache_stays_exact_under_random_changes(every: int) -> None:
    rng = random.Random(every)
    d = Dir(REC.pack(0, 0, 0, 0, 0, 0, 0, 0))
    for step in range(3000):
        name = f"n{rng.randint(0, 700)}"
        if rng.random() < 0.6:
            if name not in d.children:
                d.children[name] = b""
                d.added(name)
        elif name in d.children:
            del d.children[name]
            d.removed(name)
        if step % every == 0:
            assert d.sorted_names() == sorted(d.children), step
    assert d.sorted_names() == sorted(d.children)


def test_sorted_names_cache_is_reused_until_the_directory_changes() -> None:
    d = Dir(REC.pack(0, 0, 0, 0, 0, 0, 0, 0))
    for n in ("b", "a"):
        d.children[n] = b""
        d.added(n)
    first = d.sorted_names()
    assert d.sorted_names() is first
    d.children["c"] = b""
    d.added("c")
    assert d.sorted_names() == ["a", "b", "c"]


def test_very_deep_subtree_is_counted_and_removed() -> None:
    t = Tree()
    deep = "/" + "/".join(["d"] * 3000)
    t.ensure_dir(deep)
    t.attach(deep + "/f", make_node(attrs(size=3), 0.0))
    assert (t.files, t.dirs, t.total_size) == (1, 3000, 3)
    t.remove("/d")
    assert (t.files, t.dirs, t.total_size) == (0, 0, 0)


def test_single_field_readers_match_the_record() -> None:
    for flags in (0, F_PLACEHOLDER):
        rec = REC.pack(7, T0 + 0.5, T0 + 9, 0o644, 1, 2, T0 + 3, flags)
        assert flags_of(rec) == REC.unpack(rec)[I_FLAGS] == flags
        assert mtime_of_rec(rec) == REC.unpack(rec)[I_MTIME] == T0 + 0.5
