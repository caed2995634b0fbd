"""What the mount refuses: reading file content (Fusion holds metadata only) and every write.

`open` fails with EOPNOTSUPP ("Operation not supported"), which tools print as is
(`cat: f: Operation not supported`), rather than EACCES, which would look like a permission
problem on the source. Anything that would change the filesystem fails with EROFS.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pyfuse3

FUSEError = pyfuse3.FUSEError
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class ReadOnlyOperations(pyfuse3.Operations):
    async def open(self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise FUSEError(errno.EROFS)
        raise FUSEError(errno.EOPNOTSUPP)

    async def access(self, inode: pyfuse3.InodeT, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        if mode & os.W_OK:
            raise FUSEError(errno.EROFS)
        return True

    async def setattr(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EROFS)

    async def mknod(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EROFS)

    async def mkdir(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EROFS)

    async def unlink(self, *args: Any) -> None:
        raise FUSEError(errno.EROFS)

    async def rmdir(self, *args: Any) -> None:
        raise FUSEError(errno.EROFS)

    async def symlink(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EROFS)

    async def rename(self, *args: Any) -> None:
        raise FUSEError(errno.EROFS)

    async def link(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EROFS)

    async def create(self, *args: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        raise FUSEError(errno.EROFS)

    async def write(self, *args: Any) -> int:
        raise FUSEError(errno.EROFS)

    async def setxattr(self, *args: Any) -> None:
        raise FUSEError(errno.EROFS)

    async def removexattr(self, *args: Any) -> None:
        raise FUSEError(errno.EROFS)
