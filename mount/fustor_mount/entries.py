"""One view entry as the mount holds it: the API's node JSON parsed once into a compact
object, turned into stat attributes (`pyfuse3.EntryAttributes`) and xattr values on demand.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from typing import Any

import pyfuse3

from fustor.errors import ProtocolError

TYPE_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}

# The xattrs every entry carries, in the order listxattr reports them.
ENTRY_XATTRS = (
    b"user.fustor.integrity_suspect",
    b"user.fustor.sources",
    b"user.fustor.blind_spot",
    b"user.fustor.conflict",
)
# The root adds the view's state.
ROOT_XATTRS = (b"user.fustor.view", b"user.fustor.pipes")
_SOURCES: dict[tuple[str, ...], tuple[str, ...]] = {}


class Entry:
    """A merged view entry (docs/API.md "Entry"), without its children."""

    __slots__ = (
        "name", "path", "kind", "st_mode", "size", "mtime_ns", "ctime_ns", "uid", "gid",
        "target", "suspect", "sources", "blind_spot", "conflict", "child_count", "ttl", "_attr",
    )

    def __init__(
        self, name: str, kind: str, *, path: str = "", size: int = 0, mtime_ns: int = 0, ctime_ns: int = 0,
        mode: int = 0o755, uid: int = 0, gid: int = 0, target: str | None = None,
        suspect: bool = False, sources: tuple[str, ...] = (), blind_spot: str | None = None,
        conflict: bool = False, child_count: int | None = None, ttl: float = 1.0,
    ) -> None:
        self.name = name
        self.path = path
        self.kind = kind
        self.st_mode = TYPE_BITS[kind] | (mode & 0o7777)
        self.size = size
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.uid = uid
        self.gid = gid
        self.target = target
        self.suspect = suspect
        self.sources = sources
        self.blind_spot = blind_spot
        self.conflict = conflict
        self.child_count = child_count
        self.ttl = ttl  # seconds its answers are trusted (kernel and our caches)
        self._attr: pyfuse3.EntryAttributes | None = None

    @classmethod
    def from_json(cls, node: Mapping[str, Any]) -> Entry:
        """Parse one API node; a malformed node is a ProtocolError (mapped to EIO).
        Hot path (every listed child): slots are filled directly, without __init__."""
        try:
            get = node.get
            kind = node["type"]
            e = cls.__new__(cls)
            e.name = node["name"]
            # The path string is shared by the attribute cache and the inode table.
            e.path = get("path") or ""
            e.kind = kind
            mode = get("mode")
            e.st_mode = TYPE_BITS[kind] | (0o755 if mode is None else int(mode) & 0o7777)
            e.size = int(get("size") or 0)
            e.mtime_ns = to_ns(get("mtime"))
            e.ctime_ns = to_ns(get("ctime"))
            e.uid = int(get("uid") or 0)
            e.gid = int(get("gid") or 0)
            e.target = get("target")
            e.suspect = bool(get("integrity_suspect"))
            sources = tuple(get("sources") or ())
            e.sources = _SOURCES.setdefault(sources, sources)  # a handful of distinct tuples
            e.blind_spot = get("blind_spot")
            e.conflict = bool(get("conflict"))
            cc = get("child_count")
            e.child_count = None if cc is None else int(cc)
            e.ttl = 0.0  # the caller decides (FustorOperations._trust)
            e._attr = None
            return e
        except KeyError as exc:
            if exc.args and exc.args[0] not in ("name", "type", "path"):
                raise ProtocolError(f"entry {node.get('path')!r}: unknown type {node.get('type')!r}") from exc
            raise ProtocolError(f"malformed entry from Fusion: no {exc} in {dict(node)!r:.200}") from exc
        except (AttributeError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed entry from Fusion: {exc!r} in {dict(node)!r:.200}") from exc

    def attributes(self, ino: int, entry_timeout: float) -> pyfuse3.EntryAttributes:
        """Complete stat attributes for the kernel (also used by readdirplus, so nothing may be
        left out), trusted for `ttl` (the name → inode answer at most `entry_timeout`). Built
        once per entry and reused: its fields never change."""
        a = self._attr
        if a is not None and a.st_ino == ino:
            return a
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.generation = 0
        a.entry_timeout = min(self.ttl, entry_timeout)
        a.attr_timeout = self.ttl
        a.st_mode = self.st_mode
        # Directories report nlink 1: "unknown number of subdirectories", which makes find and
        # fts skip their leaf optimisation instead of trusting a wrong count.
        a.st_nlink = 1
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_rdev = 0
        size = len(os.fsencode(self.target)) if self.kind == "symlink" and self.target else self.size
        a.st_size = size
        a.st_blksize = 4096
        a.st_blocks = (size + 511) // 512  # so du adds up the source's sizes
        a.st_atime_ns = self.mtime_ns
        a.st_mtime_ns = self.mtime_ns
        a.st_ctime_ns = self.ctime_ns
        self._attr = a
        return a

    def xattr(self, name: bytes) -> bytes | None:
        """Value of one of ENTRY_XATTRS, or None if `name` is not one of them."""
        if name == b"user.fustor.integrity_suspect":
            return b"true" if self.suspect else b"false"
        if name == b"user.fustor.sources":
            return ",".join(self.sources).encode()
        if name == b"user.fustor.blind_spot":
            return (self.blind_spot or "none").encode()
        if name == b"user.fustor.conflict":
            return b"true" if self.conflict else b"false"
        return None


def to_ns(seconds: Any) -> int:
    """Seconds (JSON number) → integer ns. Whole and fractional parts separately: `t * 1e9`
    as a double is only exact to ~256 ns at today's epoch values."""
    if not seconds:
        return 0
    if seconds.__class__ is int:
        return int(seconds) * 1_000_000_000
    t = float(seconds)
    whole = int(t) if t >= 0 else math.floor(t)
    return whole * 1_000_000_000 + round((t - whole) * 1e9)


def view_state_json(meta: Mapping[str, Any] | None) -> bytes:
    """`user.fustor.pipes` on the root: partial flag and per-pipe states from response meta."""
    if meta is None:
        return b'{"partial": null, "pipes": {}}'
    body = {"partial": bool(meta.get("partial")), "pipes": meta.get("pipes") or {}}
    return json.dumps(body, sort_keys=True).encode()


def negative_attributes(timeout: float) -> pyfuse3.EntryAttributes:
    """A lookup answer of "no such entry" that the kernel caches for `timeout` seconds."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = 0
    a.entry_timeout = timeout
    a.attr_timeout = timeout
    return a
