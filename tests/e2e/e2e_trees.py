"""Comparable listings of a tree from `find -printf` (sources, mount) and from the API.

Each listing maps the path relative to the root (bytes, so non-UTF-8 names compare byte for
byte) to an `Entry`. Mtimes are integer nanoseconds; two mtimes match within 1 µs, because the
API carries them as JSON floats (a double near 1.8e9 s resolves ~240 ns and `repr` round-trips
it exactly) and a mount hands out `int(mtime * 1e9)`. Directory sizes are not compared (they
are a property of the storage's directory format, not of the metadata Fusion keeps).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

MTIME_TOLERANCE_NS = 1000
_TYPES = {b"f": "file", b"d": "dir", b"l": "symlink"}


@dataclass(frozen=True)
class Entry:
    type: str
    size: int | None          # files only
    mtime_ns: int
    mode: int                 # permission bits
    target: bytes | None      # symlinks only

    def line(self, path: bytes) -> str:
        p = path.decode("utf-8", "backslashreplace")
        s = f"{p}  {self.type}"
        if self.size is not None:
            s += f" size={self.size}"
        s += f" mtime={self.mtime_ns / 1e9:.6f} mode={self.mode:o}"
        if self.target is not None:
            s += f" -> {self.target.decode('utf-8', 'backslashreplace')}"
        return s

    def same(self, other: Entry) -> bool:
        return (self.type == other.type and self.size == other.size
                and self.mode == other.mode and self.target == other.target
                and abs(self.mtime_ns - other.mtime_ns) <= MTIME_TOLERANCE_NS)


Listing = dict[bytes, Entry]


def _ns(text: str | bytes | float) -> int:
    if isinstance(text, float):
        text = repr(text)
    if isinstance(text, bytes):
        text = text.decode()
    return int(Decimal(text) * 1_000_000_000)


def find_listing(root: str | Path, *, timeout: float = 120.0) -> Listing:
    """`find ROOT -mindepth 1 -printf ...` parsed into a Listing (NUL separated fields)."""
    out = subprocess.run(
        ["find", str(root), "-mindepth", "1", "-printf", r"%P\0%y\0%s\0%T@\0%m\0%l\0"],
        capture_output=True, timeout=timeout, check=False,
    )
    if out.returncode != 0:
        # A file vanishing between readdir and stat makes find exit 1; that is a race in the
        # test's own writes, and the caller polls again.
        raise OSError(f"find {root} failed ({out.returncode}): {out.stderr[:500]!r}")
    fields = out.stdout.split(b"\0")
    listing: Listing = {}
    for i in range(0, len(fields) - 1, 6):
        path, y, size, mtime, mode, target = fields[i:i + 6]
        kind = _TYPES.get(y)
        if kind is None:
            continue  # sockets, fifos: not part of the product
        listing[path] = Entry(
            type=kind,
            size=int(size) if kind == "file" else None,
            mtime_ns=_ns(mtime),
            mode=int(mode, 8) & 0o7777,
            target=target if kind == "symlink" else None,
        )
    return listing


def api_listing(tree: Mapping[str, Any]) -> Listing:
    """The `entry` of a recursive /tree answer as a Listing (root excluded)."""
    listing: Listing = {}
    stack = list(tree.get("children") or [])
    while stack:
        node = stack.pop()
        path = os.fsencode(node["path"]).lstrip(b"/")
        kind = node["type"]
        target = node.get("target")
        listing[path] = Entry(
            type=kind,
            size=int(node["size"]) if kind == "file" else None,
            mtime_ns=_ns(float(node["mtime"])),
            mode=int(node["mode"]) & 0o7777,
            target=os.fsencode(target) if kind == "symlink" and target is not None else None,
        )
        stack.extend(node.get("children") or [])
    return listing


class Expected:
    """The union of several source listings under DESIGN §3, with ties kept as alternatives."""

    def __init__(self, sources: Iterable[Listing]) -> None:
        self.choices: dict[bytes, list[Entry]] = {}
        cands: dict[bytes, list[Entry]] = {}
        for src in sources:
            for path, e in src.items():
                cands.setdefault(path, []).append(e)
        for path, es in cands.items():
            dirs = [e for e in es if e.type == "dir"]
            pool = dirs or es  # a directory anywhere wins (conflict), else newest non-dir
            newest = max(e.mtime_ns for e in pool)
            self.choices[path] = [e for e in pool if newest - e.mtime_ns <= MTIME_TOLERANCE_NS]
        # A path below a name that the union shows as a file cannot exist in the view.
        for path in list(self.choices):
            if self._hidden(path):
                del self.choices[path]

    def _hidden(self, path: bytes) -> bool:
        parts = path.split(b"/")
        for n in range(1, len(parts)):
            parent = self.choices.get(b"/".join(parts[:n]))
            if parent is not None and parent[0].type != "dir":
                return True
        return False


def diff(expected: Expected, actual: Listing, *, label: str, limit: int = 40) -> list[str]:
    """Readable differences (empty when equal)."""
    lines: list[str] = []
    for path in sorted(set(expected.choices) | set(actual)):
        want = expected.choices.get(path)
        got = actual.get(path)
        if want is None and got is not None:
            lines.append(f"+ only in {label}: {got.line(path)}")
        elif got is None and want is not None:
            lines.append(f"- missing in {label}: {want[0].line(path)}")
        elif want is not None and got is not None and not any(w.same(got) for w in want):
            lines.append(f"~ differs in {label}:\n    sources: {want[0].line(path)}"
                         f"\n    {label + ':':8} {got.line(path)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more differences"]
    return lines
