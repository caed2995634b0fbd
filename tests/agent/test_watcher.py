"""Real inotify on tmp dirs: each event mapping of the watcher."""

# The filesystem is what these tests exercise: blocking calls on it are intended.
# ruff: noqa: ASYNC230, ASYNC240, ASYNC110

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio
from agent_helpers import Recorder, wait_until

from fustor.agent.inotify import IN_Q_OVERFLOW, RawEvent
from fustor.agent.scanner import compile_excludes
from fustor.agent.watcher import Watcher
from fustor.agent.watches import fs_type


async def start(nursery: trio.Nursery, root: Path, **kw: object) -> tuple[Watcher, Recorder]:
    rec = Recorder()
    w = Watcher(str(root), rec.emit, rec.rescan, coalesce_sec=kw.pop("coalesce_sec", 0.1),  # type: ignore[arg-type]
                **kw)  # type: ignore[arg-type]
    await nursery.start(w.run)
    return w, rec


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "src"
    r.mkdir()
    return r


async def test_create_write_close_and_rule0(root: Path, nursery: trio.Nursery) -> None:
    w, rec = await start(nursery, root)
    with open(root / "f.dat", "wb") as f:
        f.write(b"x" * 100)
    await wait_until(lambda: any(r.get("write") == "complete" for r in rec.ops("upsert", "/f.dat")))
    ups = rec.ops("upsert", "/f.dat")
    assert ups[-1]["size"] == 100 and ups[-1]["type"] == "file"
    assert ups[-1]["mode"] == os.stat(root / "f.dat").st_mode & 0o7777
    assert "scan" not in ups[-1]
    # rule 0: the parent directory's fresh attributes
    assert rec.ops("upsert", "/")
    assert rec.ops("upsert", "/")[-1]["mtime"] == pytest.approx(os.stat(root).st_mtime)


async def test_empty_create_is_complete(root: Path, nursery: trio.Nursery) -> None:
    w, rec = await start(nursery, root)
    (root / "e").touch()
    await wait_until(lambda: bool(rec.ops("upsert", "/e")))
    assert rec.ops("upsert", "/e")[0]["write"] == "complete"


async def test_modify_coalesced_progress_then_complete(root: Path, nursery: trio.Nursery) -> None:
    (root / "g").write_bytes(b"")
    w, rec = await start(nursery, root, coalesce_sec=0.3)
    f = open(root / "g", "ab")  # noqa: SIM115
    try:
        t0 = trio.current_time()
        for _ in range(20):
            f.write(b"y" * 10)
            f.flush()
            await trio.sleep(0.01)
        took = trio.current_time() - t0
        await wait_until(lambda: bool(rec.ops("upsert", "/g")))
        await trio.sleep(0.4)
        prog = [r for r in rec.ops("upsert", "/g") if r.get("write") == "progress"]
        # 20 writes: at most one progress row per coalescing window (~0.2 s of writes: 1-2)
        assert 1 <= len(prog) <= int(took / 0.3) + 2 < 20
        assert not [r for r in rec.ops("upsert", "/g") if r.get("write") == "complete"]
    finally:
        f.close()
    await wait_until(lambda: any(r.get("write") == "complete" for r in rec.ops("upsert", "/g")))
    assert rec.ops("upsert", "/g")[-1]["size"] == 200


async def test_attrib(root: Path, nursery: trio.Nursery) -> None:
    (root / "h").write_bytes(b"1")
    w, rec = await start(nursery, root)
    os.chmod(root / "h", 0o600)
    await wait_until(lambda: any(r["mode"] == 0o600 for r in rec.ops("upsert", "/h")))


async def test_delete_file_and_dir(root: Path, nursery: trio.Nursery) -> None:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "x").write_bytes(b"1")
    (root / "k").write_bytes(b"1")
    w, rec = await start(nursery, root)
    assert w.stats().watched == 3 and w.stats().directories == 3
    os.unlink(root / "k")
    shutil.rmtree(root / "d")
    await wait_until(lambda: {"/k", "/d"} <= rec.paths("delete"))
    assert "/d/e/x" in rec.paths("delete")
    await wait_until(lambda: w.stats().watched == 1)
    assert w.stats().directories == 1


async def test_move_file_and_tree_paired(root: Path, nursery: trio.Nursery) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "f").write_bytes(b"1")
    (root / "dst").mkdir()
    (root / "m").write_bytes(b"1")
    w, rec = await start(nursery, root)
    os.rename(root / "m", root / "dst" / "m2")
    os.rename(root / "a", root / "dst" / "a2")
    await wait_until(lambda: len(rec.ops("move")) == 2)
    moves = [(r["path"], r["dest"]) for r in rec.ops("move")]
    assert moves == [("/m", "/dst/m2"), ("/a", "/dst/a2")]
    assert not rec.ops("delete")
    # Rule 0 for both parents, and the moved file is complete in place.
    assert rec.ops("upsert", "/dst") and rec.ops("upsert", "/")
    assert rec.ops("upsert", "/dst/m2")[-1]["write"] == "complete"
    # The watches inside the moved tree follow it: new events carry the new path.
    (root / "dst" / "a2" / "b" / "c" / "new").write_bytes(b"2")
    await wait_until(lambda: bool(rec.ops("upsert", "/dst/a2/b/c/new")))
    assert not [p for p in rec.paths() if p.startswith("/a/")]


async def test_move_out_and_in(root: Path, tmp_path: Path, nursery: trio.Nursery) -> None:
    outside = tmp_path / "outside"
    (outside / "t" / "u").mkdir(parents=True)
    (outside / "t" / "u" / "deep").write_bytes(b"1")
    (outside / "t" / "top").write_bytes(b"1")
    (root / "leave" / "sub").mkdir(parents=True)
    (root / "leave" / "sub" / "x").write_bytes(b"1")
    w, rec = await start(nursery, root)
    os.rename(root / "leave", tmp_path / "gone")
    os.rename(outside / "t", root / "t")
    await wait_until(lambda: "/leave" in rec.paths("delete")
                     and {"/t", "/t/u", "/t/u/deep", "/t/top"} <= rec.paths())
    assert not rec.ops("move")
    # Moved-in files are complete; the moved-in tree is watched, the moved-out one is not.
    assert rec.ops("upsert", "/t/u/deep")[-1]["write"] == "complete"
    await wait_until(lambda: w.stats().watched == 3)   # root, /t, /t/u
    (root / "t" / "u" / "later").write_bytes(b"x")
    (tmp_path / "gone" / "sub" / "ignored").write_bytes(b"x")
    await wait_until(lambda: bool(rec.ops("upsert", "/t/u/later")))
    await trio.sleep(0.1)
    assert not [p for p in rec.paths() if "ignored" in p]


async def test_mkdir_p_then_files_none_missed(root: Path, nursery: trio.Nursery) -> None:
    w, rec = await start(nursery, root)
    expected = set()
    for i in range(5):
        d = root / f"a{i}" / "b" / "c"
        os.makedirs(d)
        for j in range(10):
            (d / f"f{j}").write_bytes(b"z")
            expected.add(f"/a{i}/b/c/f{j}")
        expected |= {f"/a{i}", f"/a{i}/b", f"/a{i}/b/c"}
    await wait_until(lambda: expected <= rec.paths())
    assert w.stats().watched == 16


async def test_overflow_requests_rescan_and_rewatches(root: Path, nursery: trio.Nursery) -> None:
    w, rec = await start(nursery, root)
    await w.handle([RawEvent(-1, IN_Q_OVERFLOW, 0, b"")])
    assert rec.rescans == ["overflow"]
    # A directory created while events were lost is watched after the overflow rewalk.
    w2, rec2 = await start(nursery, root)
    os.mkdir(root / "late")
    await wait_until(lambda: "/late" in rec2.paths())
    await w2.handle([RawEvent(-1, IN_Q_OVERFLOW, 0, b"")])
    assert w2.stats().watched == 2


async def test_watch_limit_keeps_recent_dirs(root: Path, nursery: trio.Nursery) -> None:
    for i in range(6):
        d = root / f"d{i}"
        d.mkdir()
        os.utime(d, (1000 + i * 100, 1000 + i * 100))
    w, rec = await start(nursery, root, watch_limit=4)
    s = w.stats()
    assert (s.watched, s.directories, s.limited) == (4, 7, True)
    # The root and the three most recently modified directories are watched.
    (root / "d5" / "x").write_bytes(b"1")
    (root / "d4" / "x").write_bytes(b"1")
    (root / "d0" / "x").write_bytes(b"1")
    await wait_until(lambda: {"/d5/x", "/d4/x"} <= rec.paths())
    await trio.sleep(0.1)
    assert "/d0/x" not in rec.paths()
    # It keeps running: new directories still show up.
    (root / "new").mkdir()
    await wait_until(lambda: "/new" in rec.paths())


async def test_non_utf8_names(root: Path, nursery: trio.Nursery) -> None:
    w, rec = await start(nursery, root)
    raw = os.fsencode(str(root)) + b"/caf\xe9"
    with open(raw, "wb") as f:
        f.write(b"1")
    await wait_until(lambda: any(os.fsencode(p) == b"/caf\xe9" for p in rec.paths()))
    os.unlink(raw)
    await wait_until(lambda: any(os.fsencode(p) == b"/caf\xe9" for p in rec.paths("delete")))


async def test_excluded_names_are_ignored(root: Path, nursery: trio.Nursery) -> None:
    w, rec = await start(nursery, root, exclude=compile_excludes(["*.tmp", "/skip"]))
    (root / "a.tmp").write_bytes(b"1")
    (root / "skip").mkdir()
    (root / "skip" / "in").write_bytes(b"1")
    (root / "ok").write_bytes(b"1")
    await wait_until(lambda: "/ok" in rec.paths())
    await trio.sleep(0.1)
    assert not {"/a.tmp", "/skip", "/skip/in"} & rec.paths()


async def test_root_deleted_is_a_fault(root: Path, nursery: trio.Nursery) -> None:
    w, rec = await start(nursery, root)
    root.rmdir()
    await wait_until(lambda: "root_deleted" in w.stats().faults)


async def test_install_watches_leaves_and_inner_directories(root: Path,
                                                            nursery: trio.Nursery) -> None:
    # Leaves (link count 2: not listed on ext4/xfs/tmpfs), directories holding only
    # directories, and directories holding both: every one is watched.
    for i in range(3):
        for j in range(3):
            leaf = root / f"a{i}" / f"b{j}"
            leaf.mkdir(parents=True)
            (leaf / "f.dat").write_bytes(b"1")
        (root / f"a{i}" / "g.dat").write_bytes(b"1")
    (root / "a0" / "b0" / "c").mkdir()
    w, rec = await start(nursery, root)
    s = w.stats()
    assert s.watched == s.directories == 1 + 3 + 9 + 1
    for d in ("a2/b1", "a0/b0/c", "a1"):
        (root / d / "new.dat").write_bytes(b"n")
    await wait_until(lambda: {"/a2/b1/new.dat", "/a0/b0/c/new.dat", "/a1/new.dat"} <= rec.paths())


def test_fs_type_names_the_mount(tmp_path: Path) -> None:
    assert fs_type("/proc/self") == "proc"
    assert fs_type(str(tmp_path))    # whatever it is, it is named
