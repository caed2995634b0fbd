"""Real mounts: `python -m fustor_mount` in a subprocess over a real Fusion (in this trio loop,
port 0) fed by a scripted agent through the receiver protocol. Every filesystem call goes
through trio.to_thread (the Fusion it waits on runs in this loop)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from mount_support import (
    OPEN_AGENTS,
    READ_KEY,
    T0,
    VIEW,
    MountProcess,
    ScriptedAgent,
    fusion_config,
    row,
)

from fustor_fusion.service import FusionHandle, serve_fusion

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
                       reason="needs /dev/fuse and fusermount3"),
]

R = TypeVar("R")


@pytest.fixture(autouse=True)
async def close_agents() -> AsyncIterator[None]:
    yield
    while OPEN_AGENTS:
        await OPEN_AGENTS.pop().aclose()


async def fs(fn: Callable[..., R], *args: Any) -> R:
    """A filesystem call on the mount, off the trio thread (Fusion answers it from here)."""
    return await trio.to_thread.run_sync(fn, *args)


@asynccontextmanager
async def running_fusion(port: int = 0) -> AsyncIterator[FusionHandle]:
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(serve_fusion, fusion_config(port))
        try:
            yield handle
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def mounted(mnt: Path, url: str, home: Path, *args: str) -> AsyncIterator[MountProcess]:
    await fs(lambda: mnt.mkdir(exist_ok=True))
    m = MountProcess(mnt, url, home, *args)
    try:
        await fs(m.wait_mounted)
        yield m
    finally:
        code = await fs(m.stop)
        print(m.output())
        assert not await fs(os.path.ismount, mnt)
        assert code == 0, f"fustor-mount exited with {code}"


TREE = [
    row("/a", "dir", mtime=T0 + 1),
    row("/a/b", "dir", mtime=T0 + 2, mode=0o750, uid=1001, gid=1002),
    row("/a/b/deep.dat", size=123456, mtime=T0 + 3.25, mode=0o600, uid=1001, gid=1002),
    row("/a/one.txt", size=1, mtime=T0 + 4.5),
    row("/a/link", "symlink", target="b/deep.dat", mtime=T0 + 5),
    row("/top.dat", size=4096, mtime=T0 + 6.75, mode=0o444),
    row(os.fsdecode(b"/caf\xe9.bin"), size=7, mtime=T0 + 7),
    row("/many", "dir"),
    *[row(f"/many/f{i:04d}", size=i, mtime=T0 + i) for i in range(1200)],
]


def expected_find(mnt: Path) -> list[str]:
    lines = [f"{mnt} 0 {T0:.10f}"]
    for r in TREE:
        size = len(r["target"]) if r["type"] == "symlink" else r["size"]
        lines.append(f"{mnt}{r['path']} {size} {r['mtime']:.10f}")
    return sorted(lines)


async def test_listing_find_stat_xattrs_and_errors(tmp_path: Path) -> None:
    async with running_fusion() as fusion:
        agent = ScriptedAgent(fusion.receiver_urls["r1"])
        await agent.open()
        await agent.snapshot(TREE)
        mnt = tmp_path / "mnt"
        async with mounted(mnt, fusion.api_url, tmp_path) as m:
            # A name that is not UTF-8, looked up before any listing: bytes survive the trip.
            assert (await fs(os.stat, os.fsencode(mnt) + b"/caf\xe9.bin")).st_size == 7
            assert sorted(await fs(os.listdir, mnt)) == sorted(["a", "top.dat", "café.bin".replace("é", "\udce9"), "many"])
            assert b"caf\xe9.bin" in await fs(os.listdir, os.fsencode(mnt))
            out = await fs(lambda: subprocess.run(
                ["find", str(mnt), "-printf", "%p %s %T@\n"], capture_output=True, check=True,
                timeout=60).stdout)
            got = sorted(os.fsdecode(line) for line in out.splitlines())
            assert got == expected_find(mnt)

            st = await fs(os.stat, mnt / "a/b/deep.dat")
            assert (st.st_size, st.st_uid, st.st_gid, oct(st.st_mode)) == (123456, 1001, 1002, "0o100600")
            assert st.st_mtime_ns == 1_700_000_003_750_000_000 and st.st_nlink == 1
            assert st.st_blocks == (123456 + 511) // 512
            assert (await fs(os.stat, mnt / "a/b")).st_mode == 0o40750
            assert await fs(os.readlink, mnt / "a/link") == "b/deep.dat"
            assert (await fs(os.stat, mnt / "a/link")).st_size == 123456  # followed inside the mount

            names = await fs(os.listxattr, mnt / "top.dat")
            assert set(names) == {"user.fustor.integrity_suspect", "user.fustor.sources",
                                  "user.fustor.blind_spot", "user.fustor.conflict"}
            assert await fs(os.getxattr, mnt / "top.dat", "user.fustor.sources") == b"pipe-1"
            assert await fs(os.getxattr, mnt, "user.fustor.view") == VIEW.encode()
            state = json.loads(await fs(os.getxattr, mnt, "user.fustor.pipes"))
            assert state["partial"] is False and state["pipes"]["pipe-1"]["state"] == "ready"
            with pytest.raises(OSError) as ei:
                await fs(os.getxattr, mnt / "top.dat", "user.nothing")
            assert ei.value.errno == errno.ENODATA
            dump = await fs(lambda: subprocess.run(["getfattr", "-d", str(mnt / "a/one.txt")],
                                                   capture_output=True, text=True, timeout=30).stdout)
            assert 'user.fustor.integrity_suspect="false"' in dump

            cat = await fs(lambda: subprocess.run(["cat", str(mnt / "top.dat")], capture_output=True,
                                                  text=True, timeout=30))
            assert cat.returncode != 0 and "Operation not supported" in cat.stderr
            for call in (lambda: open(mnt / "top.dat", "w"), lambda: os.mkdir(mnt / "new"),
                         lambda: os.unlink(mnt / "top.dat"), lambda: os.rename(mnt / "a", mnt / "z"),
                         lambda: os.setxattr(mnt / "top.dat", "user.x", b"1")):
                with pytest.raises(OSError) as ei:
                    await fs(call)
                assert ei.value.errno == errno.EROFS
            sv = await fs(os.statvfs, mnt)
            assert sv.f_files >= len(TREE) and sv.f_ffree == 0
            mounts = await fs(Path("/proc/self/mounts").read_text)
            assert f"fustor:{VIEW} {mnt} fuse.fustor ro," in mounts
            # `fusermount3 -u` by the user ends the process cleanly (exit 0, checked on exit).
            await trio.run_process(["fusermount3", "-u", str(mnt)])
            await fs(m.proc.wait, 15)
        await agent.aclose()


async def test_realtime_find_on_a_miss_and_negative_cache(tmp_path: Path) -> None:
    blind = {"/a": [row("/a/blind.dat", size=99, mtime=T0 + 50)]}
    async with running_fusion() as fusion, trio.open_nursery() as nursery:
        agent = ScriptedAgent(fusion.receiver_urls["r1"])
        await agent.open()
        await agent.snapshot(TREE[:5])
        nursery.start_soon(agent.serve_finds_forever, lambda p: blind.get(p, []))
        mnt, plain = tmp_path / "mnt", tmp_path / "plain"
        async with mounted(mnt, fusion.api_url, tmp_path), \
                mounted(plain, fusion.api_url, tmp_path, "--no-realtime-find"):
            # Without realtime find the blind file is simply not there.
            assert not await fs(os.path.exists, plain / "a/blind.dat")
            assert agent.finds == []
            t0 = time.monotonic()
            st = await fs(os.stat, mnt / "a/blind.dat")
            assert st.st_size == 99 and time.monotonic() - t0 < 2.0
            assert [c["path"] for c in agent.finds] == ["/a"]
            # A name nobody has: not found after the find, then answered from the negative cache.
            assert not await fs(os.path.exists, mnt / "a/nothing.dat")
            assert len(agent.finds) == 2
            assert not await fs(os.path.exists, mnt / "a/nothing.dat")
            assert len(agent.finds) == 2
            assert not await fs(os.path.exists, plain / "a/nothing.dat")
            assert len(agent.finds) == 2
        nursery.cancel_scope.cancel()
        await agent.aclose()


async def test_fusion_down_gives_eio_and_the_mount_recovers(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m: MountProcess | None = None
    try:
        async with running_fusion() as fusion:
            url = fusion.api_url
            agent = ScriptedAgent(fusion.receiver_urls["r1"])
            await agent.open()
            await agent.snapshot(TREE[:6])
            m = MountProcess(mnt, url, tmp_path, "-o", "attr_timeout=30,negative_timeout=0")
            await fs(m.wait_mounted)
            assert (await fs(os.stat, mnt / "a/one.txt")).st_size == 1
            await agent.aclose()
        # Fusion is gone: what is cached still works, anything else fails with EIO, quickly.
        assert (await fs(os.stat, mnt / "a/one.txt")).st_size == 1
        for path in ("a/b", "top.dat"):
            t0 = time.monotonic()
            with pytest.raises(OSError) as ei:
                await fs(os.stat, mnt / path)
            assert ei.value.errno == errno.EIO and time.monotonic() - t0 < 10
        # Fusion is back (same address, fresh state fed again): the mount answers again.
        async with running_fusion(int(url.rsplit(":", 1)[1])) as fusion:
            assert fusion.api_url == url
            agent = ScriptedAgent(fusion.receiver_urls["r1"])
            await agent.open()
            await agent.snapshot(TREE[:6])
            assert (await fs(os.stat, mnt / "top.dat")).st_size == 4096
            assert (await fs(os.stat, mnt / "a/b")).st_mode == 0o40750
            await agent.aclose()
            assert await fs(m.stop) == 0
            assert not await fs(os.path.ismount, mnt)
    finally:
        if m is not None:
            await fs(m.stop)
            print(m.output())


async def test_not_ready_view_crash_recovery_and_detach(tmp_path: Path) -> None:
    async with running_fusion() as fusion:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        fast = ("-o", "attr_timeout=0.2,dir_timeout=0.2,negative_timeout=0")
        m = MountProcess(mnt, fusion.api_url, tmp_path, *fast)
        try:
            await fs(m.wait_mounted)
            # No agent yet: the view is not ready, mounted anyway (empty, and says so).
            assert await fs(os.listdir, mnt) == []
            state = json.loads(await fs(os.getxattr, mnt, "user.fustor.pipes"))
            assert state["partial"] is True and state["pipes"]["pipe-1"]["state"] == "no_leader"
            agent = ScriptedAgent(fusion.receiver_urls["r1"])
            await agent.open()
            await agent.snapshot(TREE[:6])
            await trio.sleep(0.3)
            assert sorted(await fs(os.listdir, mnt)) == ["a", "top.dat"]
            state = json.loads(await fs(os.getxattr, mnt, "user.fustor.pipes"))
            assert state["partial"] is False
            await agent.aclose()
            # A crash leaves a dead mount; the next start clears it and mounts again.
            m.proc.kill()
            await fs(m.proc.wait, 10)
            with pytest.raises(OSError) as ei:
                await fs(os.statvfs, mnt)
            assert ei.value.errno == errno.ENOTCONN
            m2 = MountProcess(mnt, fusion.api_url, tmp_path, *fast)
            try:
                await fs(m2.wait_mounted)
                assert sorted(await fs(os.listdir, mnt)) == ["a", "top.dat"]
                assert "dead mount" in m2.output()
            finally:
                assert await fs(m2.stop) == 0
            assert not await fs(os.path.ismount, mnt)
        finally:
            await fs(m.stop)

        # Configured once in $FUSTOR_HOME/mount.yaml (no view: the only readable one is used),
        # `fustor-mount MOUNTPOINT -D` returns once mounted, with a pid file for its mountpoint.
        (tmp_path / "mount.yaml").write_text(f"url: {fusion.api_url}\napi_key: {READ_KEY}\n")
        env = dict(os.environ, FUSTOR_HOME=str(tmp_path))
        env.pop("FUSTOR_API_KEY", None)
        r = await fs(lambda: subprocess.run(
            [sys.executable, "-m", "fustor_mount", str(mnt), "-D"], env=env, capture_output=True,
            text=True, timeout=60))
        try:
            assert r.returncode == 0, r.stderr
            assert await fs(os.path.ismount, mnt) and f"mounted view {VIEW}" in r.stdout
            assert await fs(os.getxattr, mnt, "user.fustor.view") == VIEW.encode()
            pidf = next(iter(await fs(lambda: list(tmp_path.glob("mount-*.pid")))))
            pid = int(pidf.read_text())
            # A second one on the same mountpoint refuses.
            r2 = await fs(lambda: subprocess.run(
                [sys.executable, "-m", "fustor_mount", str(mnt), "--url", fusion.api_url,
                 "--view", VIEW, "--api-key", READ_KEY, "-D"], env=env, capture_output=True,
                text=True, timeout=60))
            assert r2.returncode == 1 and "already" in r2.stderr
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while await fs(os.path.ismount, mnt) or await fs(pidf.exists):
                assert time.monotonic() < deadline, "the daemon did not unmount on SIGTERM"
                await trio.sleep(0.05)
        finally:
            if await fs(os.path.ismount, mnt):
                await trio.run_process(["fusermount3", "-u", "-z", str(mnt)], check=False)
