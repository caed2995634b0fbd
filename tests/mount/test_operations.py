"""The filesystem operations called directly with a fake view (no kernel, no HTTP): every
operation and every errno path, on trio's virtual clock."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import pyfuse3
import pytest
import trio
from fake_view import T0, FakeView

from fustor.errors import AuthError, NotFoundError, ProtocolError
from fustor_mount.finder import RealtimeFinder
from fustor_mount.operations import CacheConfig, FustorOperations

CTX = pyfuse3.RequestContext()
ROOT = pyfuse3.ROOT_INODE
# Plain listings (one request per page) unless a test turns walk readahead on.
CFG = CacheConfig(entry_timeout=10.0, attr_timeout=10.0, negative_timeout=2.0, dir_timeout=10.0,
                  page_size=5, max_entries=1000, stats_timeout=5.0, prefetch_entries=0)


@pytest.fixture
def view() -> FakeView:
    v = FakeView()
    v.add("/data", "dir")
    v.add("/data/a.dat", size=4096, uid=1234, gid=99, mode=0o640)
    v.add("/data/b.dat", size=1, integrity_suspect=True, sources=["pipe-1", "pipe-2"],
          blind_spot="added")
    v.add("/link", "symlink", target="data/a.dat", size=10)
    v.add("/conflicted", "dir", conflict=True)
    return v


def make_ops(view: FakeView, *, finder: bool = True, cfg: CacheConfig = CFG, **fkw: Any) -> FustorOperations:
    clock = trio.current_time
    f = RealtimeFinder(view, clock=clock, **{"wait": 2.0, "rate": 5.0, "burst": 20.0, **fkw}) if finder else None
    return FustorOperations(view, cfg, finder=f, clock=clock)


async def lookup_path(ops: FustorOperations, path: str) -> pyfuse3.EntryAttributes:
    ino = ROOT
    a = None
    for part in path.strip("/").split("/"):
        a = await ops.lookup(ino, os.fsencode(part), CTX)
        ino = a.st_ino
    assert a is not None
    return a


def fuse_errno(exc_info: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return exc_info.value.errno


# ---------------------------------------------------------------------------- lookup / getattr
async def test_lookup_gives_complete_attributes_and_stable_inodes(view: FakeView) -> None:
    ops = make_ops(view)
    a = await lookup_path(ops, "/data/a.dat")
    assert stat.S_ISREG(a.st_mode) and stat.S_IMODE(a.st_mode) == 0o640
    assert (a.st_size, a.st_uid, a.st_gid, a.st_nlink) == (4096, 1234, 99, 1)
    assert a.st_mtime_ns == 1_700_000_000_250_000_000 and a.st_ctime_ns == 1_700_000_001_250_000_000
    assert a.st_blocks == 8 and a.entry_timeout == 10.0 and a.attr_timeout == 10.0
    d = await ops.lookup(ROOT, b"data", CTX)
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o755
    link = await ops.lookup(ROOT, b"link", CTX)
    assert stat.S_ISLNK(link.st_mode) and link.st_size == len("data/a.dat")
    again = await lookup_path(ops, "/data/a.dat")
    assert again.st_ino == a.st_ino
    # The kernel forgets it completely; the number stays the same for the life of the mount.
    node = ops.inodes.get(a.st_ino)
    assert node is not None and node.lookups == 2
    await ops.forget([(a.st_ino, 2)])
    assert ops.inodes.get(a.st_ino) is None
    ops.attrs.clear()
    assert (await lookup_path(ops, "/data/a.dat")).st_ino == a.st_ino


async def test_lookup_dot_and_dotdot(view: FakeView) -> None:
    ops = make_ops(view)
    d = await ops.lookup(ROOT, b"data", CTX)
    assert (await ops.lookup(d.st_ino, b".", CTX)).st_ino == d.st_ino
    assert (await ops.lookup(d.st_ino, b"..", CTX)).st_ino == ROOT


async def test_getattr_served_from_cache_until_it_expires(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    ops = make_ops(view)
    a = await lookup_path(ops, "/data/a.dat")
    before = view.calls["metadata"]
    assert (await ops.getattr(a.st_ino, CTX)).st_size == 4096
    assert view.calls["metadata"] == before
    view.add("/data/a.dat", size=5000)
    assert (await ops.getattr(a.st_ino, CTX)).st_size == 4096  # still cached
    await trio.sleep(10.5)
    assert (await ops.getattr(a.st_ino, CTX)).st_size == 5000
    assert view.calls["metadata"] == before + 1


async def test_trust_follows_the_time_since_the_last_change(view: FakeView, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock) -> None:
    now = T0 + 10_000.0
    view.add("/data/fresh.dat", mtime=now - 20)       # a tenth of 20 s: below the minimum
    view.add("/data/recent.dat", mtime=now - 150)     # 15 s
    view.add("/data/written.dat", mtime=now - 150, integrity_suspect=True)  # the minimum
    view.add("/hot", "dir", mtime=now - 10)
    view.add("/hot/x.dat")
    cfg = CacheConfig(attr_timeout=60.0, attr_timeout_min=3.0, entry_timeout=30.0,
                      prefetch_entries=0)
    t0 = trio.current_time()
    ops = FustorOperations(view, cfg, clock=trio.current_time,
                           wall=lambda: now + trio.current_time() - t0)
    got = {n: await lookup_path(ops, f"/data/{n}")
           for n in ("fresh.dat", "recent.dat", "written.dat", "a.dat")}
    assert {n: (a.attr_timeout, a.entry_timeout) for n, a in got.items()} == {
        "fresh.dat": (3.0, 3.0), "recent.dat": (15.0, 15.0), "written.dat": (3.0, 3.0),
        "a.dat": (60.0, 30.0)}  # years old: the maximum (names: at most entry_timeout)
    calls = view.calls["metadata"]
    await trio.sleep(4)
    for n in ("fresh.dat", "recent.dat", "a.dat"):
        await ops.getattr(got[n].st_ino, CTX)
    assert view.calls["metadata"] == calls + 1  # only fresh.dat was asked about again
    # A directory's listing is trusted like the directory: /hot changed 10 s ago.
    hot = await lookup_path(ops, "/hot")
    await list_all(ops, hot.st_ino, monkeypatch, room=100)
    await list_all(ops, hot.st_ino, monkeypatch, room=100)
    assert view.calls["list_page"] == 1
    await trio.sleep(3.5)
    view.add("/hot/y.dat")
    assert await list_all(ops, hot.st_ino, monkeypatch, room=100) == [b"x.dat", b"y.dat"]


async def test_getattr_of_an_entry_gone_or_retyped_is_enoent(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    ops = make_ops(view)
    a = await lookup_path(ops, "/data/a.dat")
    b = await lookup_path(ops, "/data/b.dat")
    view.remove("/data/a.dat")
    view.add("/data/b.dat", "dir")
    await trio.sleep(11)
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.getattr(a.st_ino, CTX)
    assert fuse_errno(ei) == errno.ENOENT
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.getattr(b.st_ino, CTX)
    assert fuse_errno(ei) == errno.ENOENT
    # Looked up again, the directory gets an inode of its own (the kernel never sees a retype).
    nb = await lookup_path(ops, "/data/b.dat")
    assert stat.S_ISDIR(nb.st_mode) and nb.st_ino != b.st_ino


async def test_unknown_inode_is_estale(view: FakeView) -> None:
    ops = make_ops(view)
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.getattr(pyfuse3.InodeT(123456789), CTX)
    assert fuse_errno(ei) == errno.ESTALE


async def test_root_of_an_empty_view_is_a_directory() -> None:
    v = FakeView()
    del v.nodes["/"]
    ops = make_ops(v)
    a = await ops.getattr(ROOT, CTX)
    assert stat.S_ISDIR(a.st_mode)


# ---------------------------------------------------------------------------- misses
async def test_miss_without_realtime_find_is_cached_negative(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    ops = make_ops(view, finder=False)
    a = await ops.lookup(ROOT, b"nothing", CTX)
    assert a.st_ino == 0 and a.entry_timeout == 2.0  # the kernel caches the miss too
    calls = view.calls["metadata"]
    assert (await ops.lookup(ROOT, b"nothing", CTX)).st_ino == 0
    assert view.calls["metadata"] == calls
    view.add("/nothing")
    await trio.sleep(2.5)
    assert (await ops.lookup(ROOT, b"nothing", CTX)).st_ino != 0


async def test_negative_timeout_zero_answers_enoent(view: FakeView) -> None:
    cfg = CacheConfig(negative_timeout=0.0, page_size=5)
    ops = make_ops(view, finder=False, cfg=cfg)
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.lookup(ROOT, b"nothing", CTX)
    assert fuse_errno(ei) == errno.ENOENT


async def test_realtime_find_brings_a_blind_file(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    view.add_blind("/data/new.dat", size=77)
    ops = make_ops(view)
    d = await ops.lookup(ROOT, b"data", CTX)
    t0 = trio.current_time()
    a = await ops.lookup(d.st_ino, b"new.dat", CTX)
    assert a.st_ino != 0 and a.st_size == 77
    assert view.finds == ["/data"]
    assert 0.3 <= trio.current_time() - t0 < 1.0


async def test_concurrent_misses_in_one_directory_share_one_find(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    view.add_blind("/data/x1")
    view.add_blind("/data/x2")
    ops = make_ops(view)
    d = await ops.lookup(ROOT, b"data", CTX)
    got: dict[bytes, int] = {}

    async def look(name: bytes) -> None:
        got[name] = (await ops.lookup(d.st_ino, name, CTX)).st_ino

    async with trio.open_nursery() as n:
        n.start_soon(look, b"x1")
        await trio.sleep(0.01)  # x1's find is running: the others join it
        n.start_soon(look, b"x2")
        n.start_soon(look, b"never")
    # One job for the three; "never" joined it, and as it ended without the name, it made
    # one fresh find of its own (the joined job may have listed before the name existed).
    assert view.finds == ["/data", "/data"]
    assert got[b"x1"] and got[b"x2"] and got[b"never"] == 0


async def test_many_waiters_share_the_job_status_requests(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    view.job_duration = 100.0
    ops = make_ops(view)
    d = await ops.lookup(ROOT, b"data", CTX)
    async with trio.open_nursery() as n:
        for i in range(20):
            n.start_soon(ops.lookup, d.st_ino, f"ghost{i}".encode(), CTX)
    assert view.finds == ["/data"]
    # 20 lookups polling for 2 s: the job is asked about once per interval, not 20 times.
    assert view.calls["job"] <= 2.0 / 0.03 + 1


async def test_realtime_find_timeout_answers_missing_within_the_wait(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    view.job_duration = 100.0  # the agent never finishes
    ops = make_ops(view)
    t0 = trio.current_time()
    assert (await ops.lookup(ROOT, b"ghost", CTX)).st_ino == 0
    assert 2.0 <= trio.current_time() - t0 < 2.5
    assert view.finds == ["/"]
    # The miss is now cached: no second find.
    assert (await ops.lookup(ROOT, b"ghost", CTX)).st_ino == 0
    assert view.finds == ["/"]


async def test_finished_job_ends_the_wait_early(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    view.job_duration = 0.4
    ops = make_ops(view)
    t0 = trio.current_time()
    assert (await ops.lookup(ROOT, b"ghost", CTX)).st_ino == 0
    assert trio.current_time() - t0 < 1.0


async def test_rate_limit_skips_finds(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    view.job_duration = 0.1
    ops = make_ops(view, rate=0.01, burst=1)
    assert (await ops.lookup(ROOT, b"miss1", CTX)).st_ino == 0
    t0 = trio.current_time()
    assert (await ops.lookup(ROOT, b"miss2", CTX)).st_ino == 0
    assert trio.current_time() - t0 < 0.1  # answered at once, without a find
    assert view.finds == ["/"]
    assert ops.finder is not None and ops.finder.limited == 1


async def test_no_find_for_dot_dot_or_without_finder(view: FakeView) -> None:
    ops = make_ops(view, finder=False)
    assert (await ops.lookup(ROOT, b"miss", CTX)).st_ino == 0
    assert view.finds == []


# ---------------------------------------------------------------------------- readdir
class Collector:
    """Stands in for pyfuse3.readdir_reply: accepts `room` entries, then refuses."""

    def __init__(self, room: int = 10**9) -> None:
        self.room = room
        self.got: list[tuple[bytes, pyfuse3.EntryAttributes, int]] = []

    def __call__(self, token: object, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        if len(self.got) >= self.room:
            return False
        self.got.append((name, attr, next_id))
        return True


@pytest.fixture
def big(view: FakeView) -> FakeView:
    view.add("/big", "dir")
    for i in range(12):
        view.add(f"/big/f{i:02d}", size=i)
    return view


def use_collector(monkeypatch: pytest.MonkeyPatch, room: int = 10**9) -> Collector:
    c = Collector(room)
    monkeypatch.setattr(pyfuse3, "readdir_reply", c)
    return c


async def list_all(ops: FustorOperations, ino: int, monkeypatch: pytest.MonkeyPatch, room: int) -> list[bytes]:
    fh = await ops.opendir(ino, CTX)
    names: list[bytes] = []
    pos = 0
    try:
        while True:
            c = use_collector(monkeypatch, room)
            await ops.readdir(fh, pos, pyfuse3.ReaddirToken())
            if not c.got:
                return names
            names += [g[0] for g in c.got]
            pos = c.got[-1][2]
    finally:
        await ops.releasedir(fh)


async def test_readdir_pages_resume_and_complete_attributes(big: FakeView, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = make_ops(big)
    d = await ops.lookup(ROOT, b"big", CTX)
    names = await list_all(ops, d.st_ino, monkeypatch, room=4)
    assert names == [f"f{i:02d}".encode() for i in range(12)]
    assert big.calls["list_page"] == 3  # 12 entries, pages of 5: one request per page
    # Entries come with full attributes and count as lookups.
    c = use_collector(monkeypatch)
    fh = await ops.opendir(d.st_ino, CTX)
    await ops.readdir(fh, 0, pyfuse3.ReaddirToken())
    name, attr, _ = c.got[3]
    assert name == b"f03" and attr.st_size == 3 and stat.S_ISREG(attr.st_mode) and attr.st_ino
    node = ops.inodes.get(attr.st_ino)
    assert node is not None and node.path == "/big/f03" and node.lookups == 2
    # The listing filled the attribute cache: lookups of the children need no request.
    calls = big.calls["metadata"]
    assert (await ops.lookup(d.st_ino, b"f07", CTX)).st_size == 7
    assert big.calls["metadata"] == calls


async def test_readdir_refused_entries_are_not_counted(big: FakeView, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = make_ops(big)
    d = await ops.lookup(ROOT, b"big", CTX)
    fh = await ops.opendir(d.st_ino, CTX)
    use_collector(monkeypatch, room=2)
    await ops.readdir(fh, 0, pyfuse3.ReaddirToken())
    assert ops.inodes.get(ops.inodes.number("/big/f02", "file")) is None
    assert ops.inodes.get(ops.inodes.number("/big/f01", "file")) is not None


async def test_readdir_seeks_to_any_offset(big: FakeView, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = make_ops(big, cfg=CacheConfig(page_size=5, dir_timeout=0.0, prefetch_entries=0))
    d = await ops.lookup(ROOT, b"big", CTX)
    fh = await ops.opendir(d.st_ino, CTX)
    for start in (7, 0, 11, 5, 12):
        c = use_collector(monkeypatch, room=2)
        await ops.readdir(fh, start, pyfuse3.ReaddirToken())
        want = [f"f{i:02d}".encode() for i in range(start, min(start + 2, 12))]
        assert [g[0] for g in c.got] == want
        assert [g[2] for g in c.got] == list(range(start + 1, start + 1 + len(want)))


async def test_readdir_of_a_changing_directory_never_repeats(big: FakeView, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = make_ops(big, cfg=CacheConfig(page_size=5, dir_timeout=0.0, prefetch_entries=0))
    d = await ops.lookup(ROOT, b"big", CTX)
    fh = await ops.opendir(d.st_ino, CTX)
    c = use_collector(monkeypatch, room=6)
    await ops.readdir(fh, 0, pyfuse3.ReaddirToken())
    first = [g[0] for g in c.got]
    big.add("/big/f00a")  # sorts before the resume point
    big.remove("/big/f08")
    c = use_collector(monkeypatch)
    await ops.readdir(fh, c_pos := 6, pyfuse3.ReaddirToken())
    rest = [g[0] for g in c.got]
    both = first + rest
    # Added or removed meanwhile: may or may not be listed; the rest exactly once, in order.
    assert c_pos == 6 and len(both) == len(set(both)) and both == sorted(both)
    assert {f"f{i:02d}".encode() for i in range(12) if i != 8} <= set(both)


async def test_listing_cache_serves_a_second_listing(big: FakeView, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock) -> None:
    ops = make_ops(big)
    d = await ops.lookup(ROOT, b"big", CTX)
    await list_all(ops, d.st_ino, monkeypatch, room=100)
    await list_all(ops, d.st_ino, monkeypatch, room=100)
    assert big.calls["list_page"] == 3
    await trio.sleep(11)
    big.add("/big/zz")
    names = await list_all(ops, d.st_ino, monkeypatch, room=100)
    assert names[-1] == b"zz" and big.calls["list_page"] == 6


@pytest.fixture
def wide(view: FakeView) -> FakeView:
    view.add("/w", "dir")
    for d in ("d0", "d1", "d2"):
        view.add(f"/w/{d}", "dir")
        view.add(f"/w/{d}/x.dat")
        view.add(f"/w/{d}/y.dat")
        view.add(f"/w/{d}/s", "dir")
        view.add(f"/w/{d}/s/z.dat", size=3)
    view.add("/w/huge", "dir")
    for i in range(30):
        view.add(f"/w/huge/h{i:02d}")
    return view


async def walk(ops: FustorOperations, path: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path below `path`, listed through readdir + lookup in find's order."""
    a = await lookup_path(ops, path)
    out: list[str] = []
    stack = [(path, a.st_ino)]
    while stack:
        p, ino = stack.pop()
        subdirs = []
        for name in await list_all(ops, ino, monkeypatch, room=1000):
            child = await ops.lookup(ino, name, CTX)
            out.append(f"{p}/{name.decode()}")
            if stat.S_ISDIR(child.st_mode):
                subdirs.append((f"{p}/{name.decode()}", child.st_ino))
        stack.extend(reversed(subdirs))
    return sorted(out)


async def test_walk_readahead_lists_what_find_visits_next(wide: FakeView, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock) -> None:
    cfg = CacheConfig(page_size=10, prefetch_entries=20)
    ops = make_ops(wide, cfg=cfg)
    got = await walk(ops, "/w", monkeypatch)
    plain = await walk(make_ops(wide, cfg=CacheConfig(page_size=10, prefetch_entries=0)),
                       "/w", monkeypatch)
    assert got == plain and len(got) == 4 + 3 * 4 + 30
    # One walk brought /w and every directory after it up to /w/huge (30 > the 20 per
    # answer), which is then paged: 3 pages of 10.
    assert wide.walks == [("/w", 20)]
    assert wide.calls["metadata"] == 2  # /w itself, once per walk; the rest came in listings
    # Without readahead: one request per directory (w, 3 × d, 3 × s) and page (huge: 3).
    assert wide.calls["list_page"] == 3 + 10
    # Listings from a walk expire like any other: a listing after dir_timeout asks again.
    await trio.sleep(cfg.dir_timeout + 1)
    wide.add("/w/d1/s/new.dat")
    d1s = await lookup_path(ops, "/w/d1/s")
    assert b"new.dat" in await list_all(ops, d1s.st_ino, monkeypatch, room=100)
    assert wide.walks[-1] == ("/w/d1/s", 20)


async def test_walk_window_grows_along_a_walk_and_restarts_elsewhere(view: FakeView, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(40):
        view.add(f"/t/d{i:02d}", "dir") if i else (view.add("/t", "dir"), view.add("/t/d00", "dir"))
        for j in range(100):
            view.add(f"/t/d{i:02d}/f{j:03d}")
    ops = make_ops(view, cfg=CacheConfig(page_size=500, prefetch_entries=3000))
    got = await walk(ops, "/t", monkeypatch)
    assert len(got) == 40 * 101
    assert [b for _, b in view.walks] == [1000, 2000, 3000]  # doubling up to the maximum
    assert view.calls["list_page"] == 0
    ops.pages.clear()
    await list_all(ops, (await lookup_path(ops, "/t/d07")).st_ino, monkeypatch, room=1000)
    assert view.walks[-1] == ("/t/d07", 1000)  # not where the last walk ended: small again


async def test_walk_answers_are_fetched_ahead_of_the_walk(view: FakeView, monkeypatch: pytest.MonkeyPatch) -> None:
    view.add("/t", "dir")
    for i in range(60):
        view.add(f"/t/d{i:02d}", "dir")
        for j in range(100):
            view.add(f"/t/d{i:02d}/f{j:03d}")
    ops = make_ops(view, cfg=CacheConfig(page_size=500, prefetch_entries=2000))
    ahead: list[str] = []
    real = ops._walk_ahead

    async def record(start: str, done: trio.Event) -> None:
        ahead.append(start)
        await real(start, done)
    monkeypatch.setattr(ops, "_walk_ahead", record)
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        got = await walk(ops, "/t", monkeypatch)
    assert len(got) == 60 * 101
    # The first answer (1000) is the caller's; at its end the walk goes on (2000) and the one
    # after that is fetched ahead; each answer fetched ahead starts the next when reached.
    assert view.walks == [("/t", 1000), ("/t/d09", 2000), ("/t/d29", 2000), ("/t/d49", 2000)]
    assert ahead == ["/t/d29", "/t/d49"]
    assert view.calls["list_page"] == 0


async def test_walk_falls_back_to_plain_listings(wide: FakeView, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = make_ops(wide, cfg=CacheConfig(page_size=10, prefetch_entries=20))
    # Known to be bigger than a walk answer: paged at once, no walk asked for.
    huge = await lookup_path(ops, "/w/huge")
    assert len(await list_all(ops, huge.st_ino, monkeypatch, room=100)) == 30
    assert wide.walks == [] and wide.calls["list_page"] == 3
    # A Fusion without walks (404) or refusing one (400): plain listings, same answers.
    for error in (NotFoundError("no such endpoint"), ProtocolError("too many")):
        ops = make_ops(wide, cfg=CacheConfig(page_size=10, prefetch_entries=20))

        async def refuse(start: str, max_entries: int, error: Exception = error) -> None:
            raise error
        monkeypatch.setattr(wide, "walk", refuse)
        assert len(await walk(ops, "/w", monkeypatch)) == 46
        monkeypatch.undo()


async def test_opendir_of_a_file_and_readdir_of_a_bad_handle(view: FakeView) -> None:
    ops = make_ops(view)
    a = await lookup_path(ops, "/data/a.dat")
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.opendir(a.st_ino, CTX)
    assert fuse_errno(ei) == errno.ENOTDIR
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.readdir(pyfuse3.FileHandleT(999), 0, pyfuse3.ReaddirToken())
    assert fuse_errno(ei) == errno.EBADF


# ---------------------------------------------------------------------------- readlink, xattrs
async def test_readlink(view: FakeView) -> None:
    ops = make_ops(view)
    link = await ops.lookup(ROOT, b"link", CTX)
    assert await ops.readlink(link.st_ino, CTX) == b"data/a.dat"
    f = await lookup_path(ops, "/data/a.dat")
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.readlink(f.st_ino, CTX)
    assert fuse_errno(ei) == errno.EINVAL


async def test_entry_xattrs(view: FakeView) -> None:
    ops = make_ops(view)
    b = await lookup_path(ops, "/data/b.dat")
    names = await ops.listxattr(b.st_ino, CTX)
    assert set(names) == {b"user.fustor.integrity_suspect", b"user.fustor.sources",
                          b"user.fustor.blind_spot", b"user.fustor.conflict"}
    got = {n: await ops.getxattr(b.st_ino, n, CTX) for n in names}
    assert got == {b"user.fustor.integrity_suspect": b"true", b"user.fustor.sources": b"pipe-1,pipe-2",
                   b"user.fustor.blind_spot": b"added", b"user.fustor.conflict": b"false"}
    c = await ops.lookup(ROOT, b"conflicted", CTX)
    assert await ops.getxattr(c.st_ino, b"user.fustor.conflict", CTX) == b"true"
    for bad in (b"user.fustor.view", b"user.other"):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops.getxattr(b.st_ino, bad, CTX)
        assert fuse_errno(ei) == pyfuse3.ENOATTR
    for other_namespace in (b"security.selinux", b"system.posix_acl_access", b"trusted.x"):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops.getxattr(b.st_ino, other_namespace, CTX)
        assert fuse_errno(ei) == errno.EOPNOTSUPP


async def test_root_xattrs_show_the_view_state(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    ops = make_ops(view)
    names = await ops.listxattr(ROOT, CTX)
    assert b"user.fustor.view" in names and b"user.fustor.pipes" in names
    assert await ops.getxattr(ROOT, b"user.fustor.view", CTX) == b"test-view"
    state = json.loads(await ops.getxattr(ROOT, b"user.fustor.pipes", CTX))
    assert state == {"partial": False, "pipes": view.meta["pipes"]}
    view.meta = {"partial": True, "pipes": {"pipe-1": {"state": "snapshot"}}}
    await trio.sleep(6)
    state = json.loads(await ops.getxattr(ROOT, b"user.fustor.pipes", CTX))
    assert state == {"partial": True, "pipes": {"pipe-1": {"state": "snapshot"}}}
    assert ops.partial is True


# ---------------------------------------------------------------------------- content, writes, statfs
async def test_open_for_read_is_not_supported_and_writes_are_erofs(view: FakeView) -> None:
    ops = make_ops(view)
    a = await lookup_path(ops, "/data/a.dat")
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.open(a.st_ino, os.O_RDONLY, CTX)
    assert fuse_errno(ei) == errno.EOPNOTSUPP
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await ops.open(a.st_ino, flags, CTX)
        assert fuse_errno(ei) == errno.EROFS
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.access(a.st_ino, os.W_OK, CTX)
    assert fuse_errno(ei) == errno.EROFS
    assert await ops.access(a.st_ino, os.R_OK, CTX)
    calls = [
        ops.setattr(a.st_ino, pyfuse3.EntryAttributes(), pyfuse3.SetattrFields(), None, CTX),
        ops.mknod(ROOT, b"n", 0o644, 0, CTX), ops.mkdir(ROOT, b"d", 0o755, CTX),
        ops.unlink(ROOT, b"link", CTX), ops.rmdir(ROOT, b"data", CTX),
        ops.symlink(ROOT, b"s", b"t", CTX), ops.rename(ROOT, b"link", ROOT, b"l2", 0, CTX),
        ops.link(a.st_ino, ROOT, b"h", CTX), ops.create(ROOT, b"c", 0o644, os.O_WRONLY, CTX),
        ops.write(pyfuse3.FileHandleT(1), 0, b"x"), ops.setxattr(a.st_ino, b"user.x", b"1", CTX),
        ops.removexattr(a.st_ino, b"user.x", CTX),
    ]
    for coro in calls:
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await coro
        assert fuse_errno(ei) == errno.EROFS


async def test_statfs_reports_the_view_counts(view: FakeView) -> None:
    ops = make_ops(view)
    s = await ops.statfs(CTX)
    assert s.f_files == 6 and s.f_ffree == 0
    assert s.f_blocks == 2 and s.f_bsize == 4096  # 4096 + 1 + 10 bytes → 2 blocks
    await ops.statfs(CTX)
    assert view.calls["stats"] == 1


# ---------------------------------------------------------------------------- failures
async def test_fusion_down_eio_but_cached_entries_still_served(view: FakeView, autojump_clock: trio.abc.Clock) -> None:
    ops = make_ops(view)
    a = await lookup_path(ops, "/data/a.dat")
    view.down = True
    assert (await ops.getattr(a.st_ino, CTX)).st_size == 4096  # cached
    assert (await lookup_path(ops, "/data/a.dat")).st_ino == a.st_ino
    d = await ops.lookup(ROOT, b"data", CTX)
    for coro in (ops.lookup(d.st_ino, b"b.dat", CTX), ops.statfs(CTX)):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await coro
        assert fuse_errno(ei) == errno.EIO
    fh = await ops.opendir(d.st_ino, CTX)
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.readdir(fh, 0, pyfuse3.ReaddirToken())
    assert fuse_errno(ei) == errno.EIO
    await trio.sleep(11)  # the cache expired: now the entry fails too
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.getattr(a.st_ino, CTX)
    assert fuse_errno(ei) == errno.EIO
    view.down = False  # Fusion is back: no restart needed
    assert (await ops.getattr(a.st_ino, CTX)).st_size == 4096
    assert (await ops.lookup(d.st_ino, b"b.dat", CTX)).st_size == 1


async def test_fusion_down_during_a_realtime_find_is_eio(view: FakeView) -> None:
    ops = make_ops(view)
    orig = view.start_find

    async def failing(path: str) -> str | None:
        view.down = True
        return await orig(path)

    view.start_find = failing  # type: ignore[method-assign]
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.lookup(ROOT, b"ghost", CTX)
    assert fuse_errno(ei) == errno.EIO


@pytest.mark.parametrize(("error", "code"), [
    (AuthError("unknown key"), errno.EACCES),
    (ProtocolError("bad parameter"), errno.EIO),
])
async def test_other_errors_map_to_errno(view: FakeView, error: Exception, code: int) -> None:
    ops = make_ops(view)
    view.error = error  # type: ignore[assignment]
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.lookup(ROOT, b"data", CTX)
    assert fuse_errno(ei) == code


async def test_malformed_entry_is_eio(view: FakeView) -> None:
    view.add("/weird", "file")
    view.nodes["/weird"]["type"] = "socket"
    ops = make_ops(view)
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.lookup(ROOT, b"weird", CTX)
    assert fuse_errno(ei) == errno.EIO


async def test_unexpected_exception_is_eio(view: FakeView, caplog: pytest.LogCaptureFixture) -> None:
    ops = make_ops(view)

    async def broken(path: str) -> Iterator[Any]:
        raise RuntimeError("bug")

    view.metadata = broken  # type: ignore[assignment,method-assign]
    with pytest.raises(pyfuse3.FUSEError) as ei:
        await ops.lookup(ROOT, b"data", CTX)
    assert fuse_errno(ei) == errno.EIO
    assert "lookup" in caplog.text
