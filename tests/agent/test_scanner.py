"""The scanner against os.walk, ordering guarantees, vanished entries, incremental and full
audits, and the end signal on failure."""

# The filesystem is what these tests exercise: blocking calls on it are intended.
# ruff: noqa: ASYNC230, ASYNC240, ASYNC110

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
from agent_helpers import Recorder

from fustor.agent import rows
from fustor.agent.audit import AuditCache
from fustor.agent.scanner import compile_excludes, run_scan, scan_to_null
from fustor.protocol import parse_event


def make_tree(root: Path) -> None:
    for i in range(3):
        for j in range(4):
            d = root / f"d{i}" / f"e{j}"
            d.mkdir(parents=True)
            for k in range(5):
                (d / f"f{k}.dat").write_bytes(b"x" * k)
    (root / "top.txt").write_bytes(b"hello")
    os.symlink("d0", root / "link_to_dir")
    os.symlink("nowhere", root / "dangling")
    os.symlink("../top.txt", root / "d1" / "link_to_file")
    os.mkdir(root / "empty")
    with open(os.fsencode(str(root)) + b"/caf\xe9", "wb") as f:
        f.write(b"1")


def walk_truth(root: Path) -> dict[str, str]:
    truth: dict[str, str] = {}
    base = str(root)
    for dp, dn, fn in os.walk(base):   # os.walk does not follow symlinks by default
        for name in dn + fn:
            full = os.path.join(dp, name)
            st = os.lstat(full)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else (
                "symlink" if stat.S_ISLNK(st.st_mode) else "file")
            truth[full[len(base):]] = kind
    return truth


def check_order(rows: list[dict[str, Any]]) -> None:
    """A directory's row comes before its children; DirDone after all its children."""
    seen: set[str] = {"/"}
    done: set[str] = set()
    for r in rows:
        if r["op"] == "upsert":
            parent = r["path"].rsplit("/", 1)[0] or "/"
            assert parent in seen, f"{r['path']} before its parent"
            assert parent not in done, f"{r['path']} after DirDone of its parent"
            seen.add(r["path"])
        elif r["op"] == "dir_done":
            done.add(r["path"])


@pytest.mark.parametrize("workers", [1, 4])
async def test_snapshot_matches_os_walk(tmp_path: Path, workers: int) -> None:
    make_tree(tmp_path)
    rec = Recorder()
    res = await run_scan(str(tmp_path), rec.sink, kind="snapshot", workers=workers, chunk=7)
    truth = walk_truth(tmp_path)
    got = {r["path"]: r["type"] for r in rec.ops("upsert") if r["path"] != "/"}
    assert got == truth
    assert res.ok and res.entries == len(truth) + 1 and res.errors == 0
    # Every row is valid protocol and carries the scan and the parent's mtime.
    for r in rec.rows:
        parse_event(r)
    ups = rec.ops("upsert")
    assert all(r["scan"] == res.scan_id for r in ups)
    assert all("parent_mtime" in r for r in ups if r["path"] != "/")
    # Symlinks are reported with their target and never followed.
    links = {r["path"]: r.get("target") for r in ups if r["type"] == "symlink"}
    assert links == {"/link_to_dir": "d0", "/dangling": "nowhere", "/d1/link_to_file": "../top.txt"}
    assert not [p for p in got if p.startswith("/link_to_dir/")]
    # Framing: start first, end last; a DirDone for every directory.
    assert rec.rows[0]["op"] == "scan_start" and rec.rows[0]["kind"] == "snapshot"
    assert rec.rows[-1] == {"op": "scan_end", "scan": res.scan_id, "ok": True,
                            "entries": res.entries, "errors": 0}
    dirs = {p for p, k in truth.items() if k == "dir"} | {"/"}
    assert {r["path"] for r in rec.ops("dir_done")} == dirs
    assert res.dirs == len(dirs)
    check_order(rec.rows)
    assert any(os.fsencode(p) == b"/caf\xe9" for p in got)


async def test_exclude(tmp_path: Path) -> None:
    make_tree(tmp_path)
    rec = Recorder()
    await run_scan(str(tmp_path), rec.sink, kind="snapshot",
                   exclude=compile_excludes(["*.dat", "/d2"]))
    paths = rec.paths()
    assert not [p for p in paths if p.endswith(".dat") or p.startswith("/d2")]
    assert "/d0/e0" in paths


async def test_vanished_directory_gets_no_dir_done(tmp_path: Path) -> None:
    names = [f"d{i}" for i in range(12)]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_bytes(b"1")
    rec = Recorder()
    removed: list[str] = []

    async def sink(rows: list[str]) -> None:
        rec.emit(rows)
        # Once the root's listing has been delivered, remove a directory not yet listed: the
        # walk may run a few chunks ahead of the sink, so take the one it lists last (the
        # first listed by the root: subdirectories are visited last-in first-out).
        if not removed and any('"dir_done"' in r and '"path":"/"' in r for r in rows):
            order = [r["path"][1:] for r in rec.ops("upsert")
                     if r["path"] != "/" and r["path"].count("/") == 1]
            victim = order[0]
            (tmp_path / victim / "f").unlink()
            (tmp_path / victim).rmdir()
            removed.append("/" + victim)

    res = await run_scan(str(tmp_path), sink, kind="snapshot", workers=1, chunk=1)
    assert removed and res.ok
    assert removed[0] not in {r["path"] for r in rec.ops("dir_done")}
    assert res.vanished == 1


async def test_incremental_audit_skips_unchanged_dirs(tmp_path: Path) -> None:
    make_tree(tmp_path)
    cache = AuditCache()
    first = Recorder()
    r1 = await run_scan(str(tmp_path), first.sink, kind="audit", cache=cache, incremental=True)
    assert r1.skipped == 0 and r1.ok
    n_dirs = r1.dirs
    assert len(cache) == n_dirs
    # Change one directory: only it is listed again; the others are DirDone(skipped) and
    # their subdirectories are still visited.
    (tmp_path / "d1" / "e2" / "new.dat").write_bytes(b"n")
    os.utime(tmp_path / "d1" / "e2", (5000, 5000))
    second = Recorder()
    r2 = await run_scan(str(tmp_path), second.sink, kind="audit", cache=cache, incremental=True)
    assert r2.ok and r2.dirs == 1 and r2.skipped == n_dirs - 1
    skipped = {r["path"] for r in second.ops("dir_done") if r["skipped"]}
    listed = {r["path"] for r in second.ops("dir_done") if not r["skipped"]}
    assert listed == {"/d1/e2"} and "/d2/e3" in skipped and "/" in skipped
    assert {p for p in second.paths() if p != "/"} == {f"/d1/e2/f{k}.dat" for k in range(5)} | {"/d1/e2/new.dat"}
    # A full audit lists everything whatever the cache says (and refreshes it).
    full = Recorder()
    r3 = await run_scan(str(tmp_path), full.sink, kind="full_audit", cache=cache)
    assert r3.skipped == 0 and r3.dirs == n_dirs
    assert not [r for r in full.ops("dir_done") if r["skipped"]]
    assert full.rows[0]["kind"] == "full_audit"


async def test_root_fault_sends_failed_end_without_dir_done(tmp_path: Path) -> None:
    make_tree(tmp_path)
    rec = Recorder()
    res = await run_scan(str(tmp_path), rec.sink, kind="audit", fault=lambda: "root_unmounted")
    assert not res.ok and res.error == "root_unmounted"
    assert [r["op"] for r in rec.rows] == ["scan_start", "scan_end"]
    assert rec.rows[-1]["ok"] is False
    rec2 = Recorder()
    res2 = await run_scan(str(tmp_path / "missing"), rec2.sink, kind="snapshot")
    assert not res2.ok and [r["op"] for r in rec2.rows] == ["scan_start", "scan_end"]


async def test_end_signal_sent_when_the_scan_fails(tmp_path: Path) -> None:
    make_tree(tmp_path)
    rec = Recorder()
    calls = [0]

    async def sink(rows: list[str]) -> None:
        calls[0] += 1
        rec.emit(rows)
        if calls[0] == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run_scan(str(tmp_path), sink, kind="audit", workers=1, chunk=3)
    end = rec.rows[-1]
    assert end["op"] == "scan_end" and end["ok"] is False and "boom" in end["error"]


async def test_find_non_recursive_and_file(tmp_path: Path) -> None:
    make_tree(tmp_path)
    rec = Recorder()
    res = await run_scan(str(tmp_path), rec.sink, kind="find", path="/d0", recursive=False,
                         job_id="j-1")
    assert rec.rows[0] == {"op": "scan_start", "scan": res.scan_id, "kind": "find",
                           "path": "/d0", "recursive": False, "job_id": "j-1"}
    assert rec.paths() == {"/d0"} | {f"/d0/e{j}" for j in range(4)}
    assert {r["path"] for r in rec.ops("dir_done")} == {"/d0"}
    rec2 = Recorder()
    res2 = await run_scan(str(tmp_path), rec2.sink, kind="find", path="/top.txt")
    assert rec2.paths() == {"/top.txt"} and res2.ok and res2.entries == 1
    rec3 = Recorder()
    res3 = await run_scan(str(tmp_path), rec3.sink, kind="find", path="/nope")
    assert res3.ok and res3.entries == 0


async def test_big_directory_is_streamed(tmp_path: Path) -> None:
    for i in range(3000):
        (tmp_path / f"f{i}").touch()
    sizes: list[int] = []

    async def sink(rows: list[str]) -> None:
        sizes.append(len(rows))

    res = await scan_to_null(str(tmp_path), workers=2, chunk=100)
    assert res.entries == 3001
    await run_scan(str(tmp_path), sink, kind="snapshot", chunk=100)
    # One directory of 3000 entries arrives in pieces, not as one list.
    assert max(sizes) < 3000 and sum(sizes) == 3000 + 4


async def test_scan_can_be_cancelled(tmp_path: Path) -> None:
    make_tree(tmp_path)
    rec = Recorder()

    async def slow(rows: list[str]) -> None:
        rec.emit(rows)
        await trio.sleep(0.05)

    with trio.move_on_after(0.08):
        await run_scan(str(tmp_path), slow, kind="snapshot", workers=2, chunk=2)
    assert rec.rows[-1]["op"] == "scan_end" and rec.rows[-1]["ok"] is False


async def test_files_vanishing_between_listing_and_lstat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        (tmp_path / f"keep{i}").write_bytes(b"1")
        (tmp_path / f"gone{i}").write_bytes(b"1")
    real = os.scandir

    class Vanishing:
        """Deletes each gone* entry after the directory listed it, before it is stat'ed."""

        def __init__(self, fd: int) -> None:
            self.fd = fd
            self.it = real(fd)

        def __enter__(self) -> Vanishing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.it.close()

        def __iter__(self) -> Any:
            for e in self.it:
                if e.name.startswith("gone"):
                    os.unlink(e.name, dir_fd=self.fd)
                yield e

    monkeypatch.setattr(os, "scandir", Vanishing)
    rec = Recorder()
    res = await run_scan(str(tmp_path), rec.sink, kind="snapshot", workers=1)
    assert res.ok and res.vanished == 5 and res.errors == 0
    assert rec.paths() == {"/"} | {f"/keep{i}" for i in range(5)}
    # The listing itself was complete: the directory still gets its DirDone.
    assert [r["path"] for r in rec.ops("dir_done")] == ["/"]


async def test_scan_rows_equal_realtime_rows(tmp_path: Path) -> None:
    # The scanner builds rows with its own f-string: byte for byte what rows.upsert gives (the
    # watcher's rows), for times before and after 1 s past the epoch, and for odd modes.
    times = [0, 5, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1_500_000_001]
    for i, ns in enumerate(times):
        f = tmp_path / f"f{i}"
        f.write_bytes(b"x" * i)
        os.chmod(f, 0o4755 if i % 2 else 0o600)
        try:
            os.utime(f, ns=(ns, ns))
        except OSError:
            continue   # a filesystem without negative times
    (tmp_path / "sub").mkdir()
    rec: list[str] = []

    async def sink(rows_: list[str]) -> None:
        rec.extend(rows_)

    res = await run_scan(str(tmp_path), sink, kind="snapshot", scan_id="s1")
    assert res.ok
    parent = rows.seconds(os.lstat(tmp_path).st_mtime_ns)
    upserts = {json.loads(r)["path"]: r for r in rec if r.startswith('{"op":"upsert"')}
    for name in [f"f{i}" for i in range(len(times))] + ["sub"]:
        st = os.lstat(tmp_path / name)
        assert upserts["/" + name] == rows.upsert("/" + name, st, scan="s1", parent_mtime=parent)


async def test_huge_directory_is_streamed_and_counted(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(700):
        (big / f"f{i}").write_bytes(b"")
    batches: list[int] = []
    rec = Recorder()

    async def sink(rows_: list[str]) -> None:
        batches.append(len(rows_))
        rec.emit(rows_)

    # chunk=1: rows are handed over every 256 rows even inside one directory's listing.
    res = await run_scan(str(tmp_path), sink, kind="snapshot", chunk=1)
    assert res.ok and res.entries == 702 == len(rec.ops("upsert"))
    assert max(batches) <= 256
    check_order(rec.rows)
