"""Builders of protocol rows for Fusion-core tests and benchmarks (plain code, no pytest).

`synthetic_snapshot(n)` yields a whole snapshot of `n` entries (dirs of `fanout` files) as
parsed rows, ready for `View.apply`; bench code can import this module from tests/server.
"""

from __future__ import annotations

from collections.abc import Iterator

from fustor.config import ViewConfig, ViewParams
from fustor.protocol import (
    Attrs,
    Delete,
    DirDone,
    Event,
    Missing,
    Move,
    ScanEnd,
    ScanStart,
    Upsert,
)
from fustor_fusion.view import View

T0 = 1_700_000_000.0     # a storage time far in the past of the tests' wall clocks


def attrs(kind: str = "file", *, size: int = 0, mtime: float = T0, ctime: float | None = None,
          mode: int | None = None, uid: int = 1000, gid: int = 1000,
          target: str | None = None) -> Attrs:
    if mode is None:
        mode = 0o755 if kind == "dir" else 0o644
    if kind == "symlink" and target is None:
        target = "target"
    return Attrs(type=kind, size=size, mtime=mtime, ctime=mtime if ctime is None else ctime,
                 mode=mode, uid=uid, gid=gid, target=target)


def up(path: str, kind: str = "file", *, scan: str | None = None, write: str | None = None,
       parent_mtime: float | None = None, **kw: object) -> Upsert:
    return Upsert(path=path, attrs=attrs(kind, **kw), scan=scan,  # type: ignore[arg-type]
                  write=write, parent_mtime=parent_mtime)


def file(path: str, mtime: float = T0, size: int = 0, **kw: object) -> Upsert:
    return up(path, "file", mtime=mtime, size=size, **kw)


def dir_(path: str, mtime: float = T0, **kw: object) -> Upsert:
    return up(path, "dir", mtime=mtime, **kw)


def delete(path: str) -> Delete:
    return Delete(path=path)


def move(src: str, dst: str) -> Move:
    return Move(path=src, dest=dst)


def start(scan: str, kind: str = "snapshot", path: str = "/", job_id: str | None = None
          ) -> ScanStart:
    return ScanStart(scan=scan, kind=kind, path=path, job_id=job_id)


def done(scan: str, path: str, skipped: bool = False) -> DirDone:
    return DirDone(scan=scan, path=path, skipped=skipped)


def missing(scan: str, path: str) -> Missing:
    return Missing(scan=scan, path=path)


def end(scan: str, ok: bool = True, entries: int = 0, error: str | None = None) -> ScanEnd:
    return ScanEnd(scan=scan, ok=ok, entries=entries, error=error)


def scan(scan_id: str, kind: str, rows: list[Upsert], *, dirs: list[str] = (),  # type: ignore[assignment]
         path: str = "/") -> list[Event]:
    """A whole scan: start, `rows` tagged with the scan, DirDone for each of `dirs`, end."""
    out: list[Event] = [start(scan_id, kind, path)]
    for r in rows:
        r.scan = scan_id
        out.append(r)
    out.extend(done(scan_id, d) for d in dirs)
    out.append(end(scan_id, entries=len(rows)))
    return out


def synthetic_snapshot(n: int, *, fanout: int = 1000, scan_id: str = "snap-1",
                       mtime: float = T0, name_len: int = 13) -> Iterator[Event]:
    """A snapshot of `n` entries: /d00000 … directories of `fanout` files each, named like
    `data_0000001.dat` (padded to `name_len` characters), parents before children."""
    yield ScanStart(scan=scan_id, kind="snapshot", path="/")
    made = 0
    d = 0
    while made < n:
        dpath = f"/d{d:05d}"
        yield Upsert(path=dpath, attrs=Attrs("dir", 4096, mtime, mtime, 0o755, 1000, 1000),
                     scan=scan_id)
        made += 1
        for i in range(min(fanout, n - made)):
            name = f"f{made + i:d}".ljust(name_len - 4, "_") + ".dat"
            yield Upsert(path=f"{dpath}/{name}",
                         attrs=Attrs("file", 4096 + made + i, mtime + i, mtime + i, 0o644,
                                     1000, 1000),
                         scan=scan_id, parent_mtime=mtime)
        made += min(fanout, n - made)
        yield DirDone(scan=scan_id, path=dpath)
        d += 1
    yield DirDone(scan=scan_id, path="/")
    yield ScanEnd(scan=scan_id, ok=True, entries=made)


class FakeClock:
    """Injected wall and monotonic clocks for View/PipeTree (`advance` moves both)."""

    def __init__(self, wall: float = T0 + 1000.0, mono: float = 100.0) -> None:
        self.w = wall
        self.m = mono

    def wall(self) -> float:
        return self.w

    def mono(self) -> float:
        return self.m

    def advance(self, sec: float) -> None:
        self.w += sec
        self.m += sec


def make_view(pipes: tuple[str, ...] = ("p1",), clock: FakeClock | None = None,
              **params: float) -> tuple[View, FakeClock]:
    clock = clock or FakeClock()
    cfg = ViewConfig(id="v", driver_params=ViewParams(**params))  # type: ignore[arg-type]
    return View(cfg, pipes, wall=clock.wall, mono=clock.mono), clock
