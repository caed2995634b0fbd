"""The inotify layer (pyinotify's binding + our bytes reader) on names that are not UTF-8."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from fustor.agent.inotify import IN_CLOSE_WRITE, IN_CREATE, Inotify, RawEvent


async def read_until(ino: Inotify, want: int) -> list[RawEvent]:
    got: list[RawEvent] = []
    with trio.fail_after(5):
        while len(got) < want:
            await trio.lowlevel.wait_readable(ino.fd)
            got.extend(ino.read())
    return got


async def test_watch_and_events_under_a_non_utf8_directory(tmp_path: Path) -> None:
    ino = Inotify()
    try:
        d = os.fsencode(tmp_path) + b"/caf\xe9"
        os.mkdir(d)
        wd = ino.add_watch(d)
        assert ino.read() == []  # non-blocking: nothing queued yet
        os.close(os.open(d + b"/x\xff", os.O_CREAT | os.O_WRONLY))
        events = await read_until(ino, 2)
        assert [(e.wd, e.name) for e in events] == [(wd, b"x\xff"), (wd, b"x\xff")]
        assert events[0].mask & IN_CREATE and events[1].mask & IN_CLOSE_WRITE
    finally:
        ino.close()


def test_missing_directory_and_simulated_limit(tmp_path: Path) -> None:
    ino = Inotify(limit=1)
    try:
        with pytest.raises(FileNotFoundError):
            ino.add_watch(tmp_path / "nope")
        ino.add_watch(tmp_path)
        (tmp_path / "b").mkdir()
        with pytest.raises(OSError, match="limit"):
            ino.add_watch(tmp_path / "b")
    finally:
        ino.close()
