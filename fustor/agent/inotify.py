"""inotify through pyinotify's libc binding, read from trio: bytes paths in, raw events out.

pyinotify's `INotifyWrapper` makes the instance and the watches. Its `Notifier.read_events`
decodes names with strict UTF-8 and `add_watch` encodes paths strictly, so one file name that is
not UTF-8 would crash it: we read the fd's records ourselves (bytes names, polled with
`trio.lowlevel.wait_readable` by the watcher, no asyncore loop), and a directory whose path is
not UTF-8 is watched through `/proc/self/fd/N` of a descriptor opened with O_NOFOLLOW. Path
bookkeeping stays in the watcher (pyinotify's Watch objects cost several hundred bytes per
directory). `limit` simulates a smaller `max_user_watches` (ENOSPC) for tests.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
from typing import Any, NamedTuple

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

_HEADER = struct.Struct("iIII")


class RawEvent(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: bytes


class WatchLimitError(OSError):
    """ENOSPC from inotify_add_watch: the user's watch quota is used up."""


def _wrapper() -> Any:
    wrapper = pyinotify.INotifyWrapper.create()
    if wrapper is None:
        raise OSError(errno.ENOSYS, "inotify is not available (no libc binding)")
    return wrapper


_WRAPPER: Any = None
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Inotify:
    """One inotify instance. Not thread-safe for bookkeeping; add_watch may run in threads."""

    def __init__(self, *, limit: int | None = None) -> None:
        global _WRAPPER
        if _WRAPPER is None:
            _WRAPPER = _wrapper()
        self._lib = _WRAPPER
        fd = int(self._lib.inotify_init())
        if fd < 0:
            e = self._lib.get_errno() or errno.EIO
            raise OSError(e, f"inotify_init: {os.strerror(e)}")
        # The fd is read from trio (wait_readable), so it must never block; no child inherits it.
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
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
        wd = self._syscall_add(bpath, mask)
        if wd < 0:
            e = self._lib.get_errno() or errno.EIO
            if e == errno.ENOSPC:
                raise WatchLimitError(e, "inotify watch limit reached (fs.inotify.max_user_watches)")
            raise OSError(e, os.strerror(e), os.fsdecode(bpath))
        return int(wd)

    def _syscall_add(self, bpath: bytes, mask: int) -> int:
        try:
            text = bpath.decode("utf-8")  # what pyinotify's binding encodes back, exactly
        except UnicodeDecodeError:
            text = None
        if text is not None and "\x00" not in text:
            return int(self._lib.inotify_add_watch(self.fd, text, mask))
        # Not UTF-8: watch the directory through a descriptor. O_NOFOLLOW did the "don't follow"
        # already, and the /proc magic link itself must be followed, so IN_DONT_FOLLOW is dropped.
        dfd = os.open(bpath, _DIR_OPEN)
        try:
            proc = f"/proc/self/fd/{dfd}"
            return int(self._lib.inotify_add_watch(self.fd, proc, mask & ~IN_DONT_FOLLOW))
        finally:
            os.close(dfd)

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
