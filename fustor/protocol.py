"""Wire shapes of the agent ↔ Fusion protocol (docs/PROTOCOL.md), pure and sync.

Rows are parsed into small slotted objects; `parse_batch` validates a whole batch before the
caller applies any of it, and names the first bad row and field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

from fustor import paths
from fustor.errors import PathError, ProtocolError

API_PREFIX: Final = "/api/v1"
PIPE_PREFIX: Final = "/api/v1/pipe"
KEY_HEADER: Final = "X-API-Key"

FILE: Final = "file"
DIR: Final = "dir"
SYMLINK: Final = "symlink"
TYPES: Final = (FILE, DIR, SYMLINK)

SCAN_KINDS: Final = ("snapshot", "audit", "full_audit", "find", "sentinel")
LEADER_ONLY_KINDS: Final = ("snapshot", "audit", "full_audit", "sentinel")
ScanKind = Literal["snapshot", "audit", "full_audit", "find", "sentinel"]
Role = Literal["leader", "follower"]
WRITE_STATES: Final = ("progress", "complete")


@dataclass(slots=True)
class Attrs:
    type: str
    size: int
    mtime: float
    ctime: float
    mode: int
    uid: int
    gid: int
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": self.type, "size": self.size, "mtime": self.mtime, "ctime": self.ctime,
            "mode": self.mode, "uid": self.uid, "gid": self.gid,
        }
        if self.target is not None:
            d["target"] = self.target
        return d


@dataclass(slots=True)
class Upsert:
    path: str
    attrs: Attrs
    scan: str | None = None          # None: a realtime fact
    write: str | None = None         # "progress" | "complete" | None
    parent_mtime: float | None = None


@dataclass(slots=True)
class Delete:
    path: str


@dataclass(slots=True)
class Move:
    path: str
    dest: str


@dataclass(slots=True)
class ScanStart:
    scan: str
    kind: str
    path: str = "/"
    recursive: bool = True
    job_id: str | None = None


@dataclass(slots=True)
class DirDone:
    scan: str
    path: str
    skipped: bool = False


@dataclass(slots=True)
class Missing:
    scan: str
    path: str


@dataclass(slots=True)
class ScanEnd:
    scan: str
    ok: bool = True
    entries: int = 0
    errors: int = 0
    error: str | None = None


Event = Upsert | Delete | Move | ScanStart | DirDone | Missing | ScanEnd


@dataclass(slots=True)
class Batch:
    seq: int
    events: list[Event]


# ---------------------------------------------------------------------------- encode
def encode(ev: Event) -> dict[str, Any]:
    """One row as JSON-ready dict (the agent's side)."""
    if isinstance(ev, Upsert):
        d = ev.attrs.to_json()
        d["op"] = "upsert"
        d["path"] = ev.path
        if ev.scan is not None:
            d["scan"] = ev.scan
        if ev.write is not None:
            d["write"] = ev.write
        if ev.parent_mtime is not None:
            d["parent_mtime"] = ev.parent_mtime
        return d
    if isinstance(ev, Delete):
        return {"op": "delete", "path": ev.path}
    if isinstance(ev, Move):
        return {"op": "move", "path": ev.path, "dest": ev.dest}
    if isinstance(ev, ScanStart):
        d = {"op": "scan_start", "scan": ev.scan, "kind": ev.kind, "path": ev.path,
             "recursive": ev.recursive}
        if ev.job_id is not None:
            d["job_id"] = ev.job_id
        return d
    if isinstance(ev, DirDone):
        return {"op": "dir_done", "scan": ev.scan, "path": ev.path, "skipped": ev.skipped}
    if isinstance(ev, Missing):
        return {"op": "missing", "scan": ev.scan, "path": ev.path}
    d = {"op": "scan_end", "scan": ev.scan, "ok": ev.ok, "entries": ev.entries,
         "errors": ev.errors}
    if ev.error is not None:
        d["error"] = ev.error
    return d


# ---------------------------------------------------------------------------- decode
class _Row:
    __slots__ = ("d", "where")

    def __init__(self, d: dict[str, Any], where: str) -> None:
        self.d = d
        self.where = where

    def fail(self, field: str, msg: str) -> ProtocolError:
        return ProtocolError(f"{self.where}.{field}: {msg}")

    def path(self, field: str = "path") -> str:
        v = self.d.get(field)
        if v is None:
            raise self.fail(field, "is required")
        try:
            return paths.check(v)
        except PathError as exc:
            raise self.fail(field, exc.message) from None

    def num(self, field: str, *, required: bool = True) -> float | None:
        v = self.d.get(field)
        if v is None:
            if required:
                raise self.fail(field, "is required")
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.fail(field, f"expected a number, got {v!r}")
        return float(v)

    def integer(self, field: str, *, lo: int = 0, hi: int | None = None, default: int | None = None) -> int:
        v = self.d.get(field, default)
        if v is None:
            raise self.fail(field, "is required")
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(field, f"expected an integer, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            raise self.fail(field, f"out of range ({v})")
        return v

    def text(self, field: str, *, required: bool = True, choices: tuple[str, ...] = ()) -> str | None:
        v = self.d.get(field)
        if v is None:
            if required:
                raise self.fail(field, "is required")
            return None
        if not isinstance(v, str) or not v:
            raise self.fail(field, f"expected a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def flag(self, field: str, default: bool) -> bool:
        v = self.d.get(field, default)
        if not isinstance(v, bool):
            raise self.fail(field, f"expected true or false, got {v!r}")
        return v


def _attrs(r: _Row) -> Attrs:
    kind = r.text("type", choices=TYPES)
    target = r.d.get("target")
    if kind == SYMLINK:
        if not isinstance(target, str):
            raise r.fail("target", "symlinks need a string target")
    elif target is not None:
        raise r.fail("target", "only symlinks have a target")
    return Attrs(
        type=kind,  # type: ignore[arg-type]
        size=r.integer("size"),
        mtime=r.num("mtime"),  # type: ignore[arg-type]
        ctime=r.num("ctime", required=False) or 0.0,
        mode=r.integer("mode", hi=0o7777),
        uid=r.integer("uid", default=0),
        gid=r.integer("gid", default=0),
        target=target,
    )


def _valid_path(p: object) -> bool:
    """Cheap check of the common case; anything unusual goes to paths.check for the message."""
    return (
        type(p) is str
        and p[:1] == "/"
        and (p == "/" or (
            p[-1] != "/" and "//" not in p and "\x00" not in p
            and "/./" not in p and "/../" not in p
            and not p.endswith(("/.", "/.."))
        ))
    )


_INF = math.inf


def _fast_upsert(raw: dict[str, Any]) -> Upsert | None:
    """Upsert rows are almost all of the traffic: validate them without the generic reader.
    Returns None when anything is unusual, and the slow path then names the problem.
    Inlined on purpose (it runs per row): `-inf < x < inf` is false for NaN and infinities,
    without a call; the path test is `_valid_path`'s."""
    get = raw.get
    path = get("path")
    kind = get("type")
    mtime = get("mtime")
    size = get("size")
    mode = get("mode")
    uid = get("uid", 0)
    gid = get("gid", 0)
    ctime = get("ctime", 0.0)
    if not (
        type(path) is str and path[:1] == "/"
        and (path == "/" or (
            path[-1] != "/" and "//" not in path and "\x00" not in path
            and "/./" not in path and "/../" not in path
            and not path.endswith(("/.", "/.."))
        ))
        and (kind == FILE or kind == DIR)
        and type(size) is int and size >= 0
        and type(mode) is int and 0 <= mode <= 0o7777
        and type(uid) is int and uid >= 0
        and type(gid) is int and gid >= 0
        and (type(mtime) is float or type(mtime) is int) and -_INF < mtime < _INF
        and (type(ctime) is float or type(ctime) is int) and -_INF < ctime < _INF
        and "target" not in raw
    ):
        return None
    scan = get("scan")
    write = get("write")
    pm = get("parent_mtime")
    if (scan is not None and (type(scan) is not str or not scan)) or (
        write is not None and write not in WRITE_STATES
    ):
        return None
    if pm is not None:
        if (type(pm) is not float and type(pm) is not int) or not -_INF < pm < _INF:
            return None
        pm = float(pm)
    return Upsert(path, Attrs(kind, size, float(mtime), float(ctime), mode, uid, gid), scan,
                  write, pm)


def parse_event(raw: object, where: str = "event") -> Event:
    if type(raw) is dict and raw.get("op") == "upsert":
        fast = _fast_upsert(raw)
        if fast is not None:
            return fast
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: expected an object, got {type(raw).__name__}")
    r = _Row(raw, where)
    op = r.text("op", choices=("upsert", "delete", "move", "scan_start", "dir_done", "missing", "scan_end"))
    if op == "upsert":
        return Upsert(
            path=r.path(), attrs=_attrs(r), scan=r.text("scan", required=False),
            write=r.text("write", required=False, choices=WRITE_STATES),
            parent_mtime=r.num("parent_mtime", required=False),
        )
    if op == "delete":
        return Delete(path=r.path())
    if op == "move":
        src, dst = r.path(), r.path("dest")
        if src == "/" or paths.is_within(dst, src):
            raise r.fail("dest", f"cannot move {src!r} into itself ({dst!r})")
        return Move(path=src, dest=dst)
    scan = r.text("scan")
    assert scan is not None
    if op == "scan_start":
        return ScanStart(
            scan=scan, kind=r.text("kind", choices=SCAN_KINDS),  # type: ignore[arg-type]
            path=r.path() if "path" in raw else "/", recursive=r.flag("recursive", True),
            job_id=r.text("job_id", required=False),
        )
    if op == "dir_done":
        return DirDone(scan=scan, path=r.path(), skipped=r.flag("skipped", False))
    if op == "missing":
        return Missing(scan=scan, path=r.path())
    err = raw.get("error")
    if err is not None and not isinstance(err, str):
        raise r.fail("error", f"expected a string, got {err!r}")
    return ScanEnd(scan=scan, ok=r.flag("ok", True), entries=r.integer("entries", default=0),
                   errors=r.integer("errors", default=0), error=err)


def parse_batch(body: object, *, max_events: int) -> Batch:
    """Validate a whole batch; raise ProtocolError (422) naming the first bad row."""
    if not isinstance(body, dict):
        raise ProtocolError("body: expected a JSON object with 'seq' and 'events'")
    seq = body.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ProtocolError(f"seq: expected an integer >= 0, got {seq!r}")
    raw = body.get("events")
    if not isinstance(raw, list):
        raise ProtocolError(f"events: expected a list, got {type(raw).__name__}")
    if len(raw) > max_events:
        from fustor.errors import TooLargeError
        raise TooLargeError(f"events: {len(raw)} rows, the limit is {max_events}; split the batch",
                            limit=max_events)
    events: list[Event] = []
    append = events.append
    for i, row in enumerate(raw):
        # the common row first, without building its error prefix (a per-row f-string)
        if type(row) is dict and row.get("op") == "upsert":
            fast = _fast_upsert(row)
            if fast is not None:
                append(fast)
                continue
        try:
            append(parse_event(row, f"events[{i}]"))
        except ProtocolError as exc:
            exc.details.setdefault("index", i)
            raise
    return Batch(seq=seq, events=events)
