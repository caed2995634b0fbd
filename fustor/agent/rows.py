"""Rows as JSON text, built where they are observed (scanner threads, watcher).

The sender joins these texts into a batch body without re-encoding, so the hot path (one
upsert per scanned entry) is a single f-string. Names that are not UTF-8 are lone surrogates
(os.fsdecode) and are escaped `\\udcXX` by the ASCII encoder, as docs/PROTOCOL.md requires.
"""

from __future__ import annotations

import os
import stat as st_
from json.encoder import encode_basestring_ascii as _q
from typing import Any

S_ISDIR = st_.S_ISDIR
S_ISLNK = st_.S_ISLNK


def quote(s: str) -> str:
    """JSON string literal, ASCII only (surrogates escaped)."""
    return _q(s)


def kind_of(mode: int) -> str:
    if S_ISDIR(mode):
        return "dir"
    if S_ISLNK(mode):
        return "symlink"
    # Sockets, fifos and devices have no type of their own in the protocol: report them as
    # (empty) files rather than hide them.
    return "file"


# Every row formats times from the nanosecond fields the same way (seconds with 9 decimals):
# realtime and scan rows of one file must carry equal numbers, since Fusion compares mtimes
# strictly, and this is also twice as fast as float repr on the scanner's hot path.
# The scanner's hot path builds the same text with an f-string (tests compare the two) and
# formats the owner part once per (mode, uid, gid).
OWNER_FMT = '"mode":%d,"uid":%d,"gid":%d'
ATTRS_FMT = '"type":%s,"size":%d,"mtime":%d.%09d,"ctime":%d.%09d,' + OWNER_FMT


def seconds(ns: int) -> str:
    """A time in ns as the JSON number every row uses."""
    s, frac = divmod(ns, 1_000_000_000)
    return f"{s}.{frac:09d}"


def mtime_of(st: os.stat_result) -> float:
    """The mtime exactly as Fusion reads it from our rows."""
    return float(seconds(st.st_mtime_ns))


def attrs_json(st: os.stat_result, target: str | None = None) -> str:
    """The ATTRS fields of a row, without braces: `"type":...,"gid":N`."""
    m = st.st_mode
    if S_ISDIR(m):
        kind = '"dir"'
    elif S_ISLNK(m):
        kind = '"symlink"'
    else:
        kind = '"file"'
    a = divmod(st.st_mtime_ns, 1_000_000_000)
    c = divmod(st.st_ctime_ns, 1_000_000_000)
    text = ATTRS_FMT % (kind, st.st_size, a[0], a[1], c[0], c[1], m & 0o7777, st.st_uid,
                        st.st_gid)
    if target is not None:
        text += f',"target":{_q(target)}'
    return text


def upsert(
    path: str,
    st: os.stat_result,
    *,
    target: str | None = None,
    scan: str | None = None,
    write: str | None = None,
    parent_mtime: str | None = None,
) -> str:
    """`parent_mtime` is already formatted (see `seconds`)."""
    tail = ""
    if scan is not None:
        tail += f',"scan":{_q(scan)}'
    if write is not None:
        tail += f',"write":"{write}"'
    if parent_mtime is not None:
        tail += f',"parent_mtime":{parent_mtime}'
    return f'{{"op":"upsert","path":{_q(path)},{attrs_json(st, target)}{tail}}}'


def delete(path: str) -> str:
    return f'{{"op":"delete","path":{_q(path)}}}'


def move(path: str, dest: str) -> str:
    return f'{{"op":"move","path":{_q(path)},"dest":{_q(dest)}}}'


def scan_start(scan: str, kind: str, path: str = "/", *, recursive: bool = True,
               job_id: str | None = None) -> str:
    job = "" if job_id is None else f',"job_id":{_q(job_id)}'
    rec = "true" if recursive else "false"
    return (f'{{"op":"scan_start","scan":{_q(scan)},"kind":"{kind}","path":{_q(path)},'
            f'"recursive":{rec}{job}}}')


def dir_done(scan: str, path: str, *, skipped: bool = False) -> str:
    sk = "true" if skipped else "false"
    return f'{{"op":"dir_done","scan":{_q(scan)},"path":{_q(path)},"skipped":{sk}}}'


def missing(scan: str, path: str) -> str:
    return f'{{"op":"missing","scan":{_q(scan)},"path":{_q(path)}}}'


def scan_end(scan: str, *, ok: bool, entries: int, errors: int, error: str | None = None) -> str:
    err = "" if error is None else f',"error":{_q(error)}'
    return (f'{{"op":"scan_end","scan":{_q(scan)},"ok":{"true" if ok else "false"},'
            f'"entries":{entries},"errors":{errors}{err}}}')


def body(seq: int, rows: list[str]) -> bytes:
    """A batch body; rows are ASCII JSON already."""
    return f'{{"seq":{seq},"events":[{",".join(rows)}]}}'.encode("ascii")


def loads_rows(raw: bytes | str) -> list[dict[str, Any]]:
    """Parse a batch body back into row dicts (tests and diagnostics)."""
    import json
    data = json.loads(raw)
    events: list[dict[str, Any]] = data["events"]
    return events
