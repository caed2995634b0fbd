"""A thin inotify binding: bytes paths in, raw events out, the fd for trio.

pyinotify 0.9.6 (our dependency, used here for its event-mask constants) decodes names with
strict UTF-8 in `Notifier.read_events` and encodes watch paths strictly, so a single file name
that is not UTF-8 crashes it; its Watch objects also cost several hundred bytes per directory.
This module keeps pyinotify's model (a non-blocking fd polled by `trio.lowlevel.wait_readable`,
events read in bulk) but calls libc through ctypes with bytes, and leaves path bookkeeping to
the watcher. `limit` simulates a smaller `max_user_watches` (ENOSPC) for tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from typing import NamedTuple

import pyinotify

IN_ACCESS = int(pyinotify.IN_ACCESS)
IN_MODIFY = int(pyinotify.IN_MODIFY)
IN_ATTRIB = int(pyinotify.IN_ATTRIB)
IN_CLOSE_WRITE = int(pyinotify.IN_CLOSE_WRITE)
IN_MOVED_FROM = int(pyinotify.IN_MOVED_FROM)
IN_MOVED_TO = int(pyinotify.IN_MOVED_TO)
IN_CREATE = int(pyinotify.IN_CREATE)
IN_DELETE = int(pyinotify.IN_DELETE)
IN_DELETE_SELF = int(pyinotify.IN_DELETE_SELF)
IN_MOVE_SELF = int(pyinotify.IN_MOVE_SELF)
IN_UNMOUNT = int(pyinotify.IN_UNMOUNT)
IN_Q_OVERFLOW = int(pyinotify.IN_Q_OVERFLOW)
IN_IGNORED = int(pyinotify.IN_IGNORED)
IN_ONLYDIR = int(pyinotify.IN_ONLYDIR)
IN_DONT_FOLLOW = int(pyinotify.IN_DONT_FOLLOW)
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = int(pyinotify.IN_ISDIR)

WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
              | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
              | IN_EXCL_UNLINK)

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_HEADER = struct.Struct("iIII")


class RawEvent(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: bytes


class WatchLimitError(OSError):
    """ENOSPC from inotify_add_watch: the user's watch quota is used up."""


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.inotify_init1.argtypes = [ctypes.c_int]
    lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return lib


_LIBC: ctypes.CDLL | None = None


class Inotify:
    """One inotify instance. Not thread-safe for bookkeeping; add_watch may run in threads."""

    def __init__(self, *, limit: int | None = None) -> None:
        global _LIBC
        if _LIBC is None:
            _LIBC = _libc()
        self._lib = _LIBC
        fd = self._lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.fd: int = fd
        self.limit = limit
        # Only a simulated limit needs to count watches (the watcher knows its own).
        self._wds: set[int] | None = set() if limit is not None else None
        self._lock = threading.Lock()

    def add_watch(self, path: str | bytes, mask: int = WATCH_MASK) -> int:
        """Watch a directory; returns the wd (the same wd again for an inode already watched).
        Raises WatchLimitError on ENOSPC, FileNotFoundError/NotADirectoryError/OSError else."""
        bpath = os.fsencode(path)
        if self._wds is None:
            return self._add(bpath, mask)
        with self._lock:   # the check and the add are one step, as in the kernel
            if self.limit is not None and len(self._wds) >= self.limit:
                raise WatchLimitError(errno.ENOSPC, "inotify watch limit reached (simulated)")
            wd = self._add(bpath, mask)
            self._wds.add(wd)
            return wd

    def _add(self, bpath: bytes, mask: int) -> int:
        wd = self._lib.inotify_add_watch(self.fd, bpath, mask)
        if wd < 0:
            e = ctypes.get_errno()
            if e == errno.ENOSPC:
                raise WatchLimitError(e, "inotify watch limit reached (fs.inotify.max_user_watches)")
            raise OSError(e, os.strerror(e), os.fsdecode(bpath))
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        if self._wds is not None:
            self._wds.discard(wd)
        self._lib.inotify_rm_watch(self.fd, wd)  # EINVAL when already gone: nothing to do

    def forget(self, wd: int) -> None:
        """The kernel dropped the watch (IN_IGNORED)."""
        if self._wds is not None:
            self._wds.discard(wd)

    def read(self) -> list[RawEvent]:
        """All events queued now (empty when none)."""
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return []
        events: list[RawEvent] = []
        pos, end = 0, len(data)
        unpack = _HEADER.unpack_from
        while pos < end:
            wd, mask, cookie, n = unpack(data, pos)
            pos += 16
            name = data[pos:pos + n].rstrip(b"\0")
            pos += n
            events.append(RawEvent(wd, mask, cookie, name))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
