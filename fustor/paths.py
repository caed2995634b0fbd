"""Path normalisation: every path inside a view is relative to the source root, starts
with '/', has no trailing '/', and no '.', '..' or empty components.

Names that are not valid UTF-8 travel as `os.fsdecode` strings (lone surrogates), which
stdlib json carries as \\udcXX escapes, so the bytes survive the round trip.
"""

from __future__ import annotations

import os

from fustor.errors import PathError

ROOT = "/"


def check(path: object) -> str:
    """Return `path` if it is a normalised view path, else raise PathError saying why."""
    if not isinstance(path, str):
        raise PathError(f"path must be a string, got {type(path).__name__}")
    if not path.startswith("/"):
        raise PathError(f"path {path!r} must start with '/'")
    if "\x00" in path:
        raise PathError(f"path {path!r} contains NUL")
    if path == ROOT:
        return path
    if path.endswith("/"):
        raise PathError(f"path {path!r} must not end with '/'")
    for part in path[1:].split("/"):
        if part in ("", ".", ".."):
            raise PathError(f"path {path!r} has an empty, '.' or '..' component")
    return path


def normalise(path: str) -> str:
    """Lenient form for user input: collapse '//' and '.', strip a trailing '/', add '/'.

    '..' is still refused: a query must not climb out of the view.
    """
    if "\x00" in path:
        raise PathError(f"path {path!r} contains NUL")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathError(f"path {path!r} contains '..'")
    return "/" + "/".join(parts)


def split(path: str) -> tuple[str, str]:
    """('/a/b', 'c') for '/a/b/c'; ('/', 'a') for '/a'; ('/', '') for '/'."""
    if path == ROOT:
        return ROOT, ""
    head, _, name = path.rpartition("/")
    return head or ROOT, name


def join(parent: str, name: str) -> str:
    return parent + name if parent == ROOT else f"{parent}/{name}"


def parts(path: str) -> list[str]:
    return [] if path == ROOT else path[1:].split("/")


def is_within(path: str, top: str) -> bool:
    """True when `path` is `top` or lies below it."""
    return top == ROOT or path == top or path.startswith(top + "/")


def from_local(root: str | bytes, local: str | bytes) -> str:
    """View path of `local` under the source root `root` (both absolute, as the OS gives them)."""
    r = os.fsdecode(root).rstrip("/")
    p = os.fsdecode(local)
    if p == r or p == r + "/":
        return ROOT
    if not p.startswith(r + "/"):
        raise PathError(f"{p!r} is not under the source root {r!r}")
    return normalise(p[len(r):])


def to_local(root: str | bytes, path: str) -> bytes:
    """Local bytes path of the view path `path` under `root`."""
    r = os.fsencode(root).rstrip(b"/")
    return r if path == ROOT else r + os.fsencode(path)
