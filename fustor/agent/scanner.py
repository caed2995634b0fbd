"""Framed scans of a source tree (snapshot, audits, find): scandir + lstat per directory on
the parallel walk engine (walk.py), rows streamed while walking.

Symlinks are never followed; entries that vanish or cannot be read are skipped and counted;
a directory that was not listed completely gets no DirDone. Bench entry points:
`scan_to_null(root)`, `scan_to_null_sender(root)`, or `python -m fustor.agent.scanner ROOT
[--sender] [--workers N]`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, NamedTuple

import trio

from fustor import paths
from fustor.agent import rows
from fustor.agent.walk import Sink, Walker, unwrap_group

if TYPE_CHECKING:
    from fustor.agent.audit import AuditCache

log = logging.getLogger(__name__)

__all__ = ["DirTask", "Lister", "ScanResult", "Sink", "compile_excludes", "run_scan",
           "scan_to_null", "scan_to_null_sender"]

_q = encode_basestring_ascii   # = rows.quote, without a Python call per entry
_S_ISDIR = stat.S_ISDIR
_S_ISLNK = stat.S_ISLNK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NS = 1_000_000_000
_OWNERS_MAX = 4096


def _kind_owner(key: tuple[int, int, int]) -> tuple[str | None, str]:
    """The type field (None for a symlink: it needs its target) and the owner fields of an
    entry with this (st_mode, st_uid, st_gid)."""
    m, uid, gid = key
    kind = None if _S_ISLNK(m) else '"dir"' if _S_ISDIR(m) else '"file"'
    return kind, rows.OWNER_FMT % (m & 0o7777, uid, gid)


def _digits(ns: int) -> str:
    """The digits of rows.seconds(ns) without the dot (the hot path splits them 9 from the end):
    str(ns) itself when ns ≥ 1 s."""
    s, frac = divmod(ns, _NS)
    return f"{s}{frac:09d}"


class DirTask(NamedTuple):
    local: str   # absolute local path (str; non-UTF-8 bytes as surrogates)
    path: str    # view path


def new_scan_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def never(name: str, path: str) -> bool:
    """The exclude predicate when nothing is excluded (the scanner skips calling it)."""
    return False


def compile_excludes(patterns: Iterable[str]) -> Callable[[str, str], bool]:
    """A predicate (name, view path) → excluded. A pattern without '/' matches names, one with
    '/' matches the view path (a leading '/' is optional)."""
    names = [fnmatch.translate(p) for p in patterns if "/" not in p]
    full = [fnmatch.translate(p if p.startswith("/") else "/" + p) for p in patterns if "/" in p]
    name_re = re.compile("|".join(names)).match if names else None
    path_re = re.compile("|".join(full)).match if full else None
    if name_re is None and path_re is None:
        return never

    def excluded(name: str, path: str) -> bool:
        return bool((name_re and name_re(name)) or (path_re and path_re(path)))
    return excluded


@dataclass
class ScanCounts:
    entries: int = 0      # upsert rows sent
    errors: int = 0       # entries or directories that could not be read
    vanished: int = 0     # entries gone between listing and lstat
    dirs: int = 0         # directories listed completely
    skipped: int = 0      # directories skipped as unchanged (incremental audit)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, entries: int, errors: int, vanished: int, dirs: int, skipped: int) -> None:
        with self.lock:
            self.entries += entries
            self.errors += errors
            self.vanished += vanished
            self.dirs += dirs
            self.skipped += skipped


class Lister:
    """Lists one directory for a scan (runs in worker threads)."""

    def __init__(
        self,
        scan_id: str,
        *,
        exclude: Callable[[str, str], bool],
        recursive: bool = True,
        cache: AuditCache | None = None,
        incremental: bool = False,
    ) -> None:
        self.counts = ScanCounts()
        self._scan_q = _q(scan_id)
        self._scan_id = scan_id
        self._exclude = exclude
        self._recursive = recursive
        self._cache = cache
        self._incremental = incremental and cache is not None
        self.spill: Callable[[list[str]], None] | None = None
        self.spill_at = 8192
        # (st_mode, st_uid, st_gid) → _kind_owner(): a handful of distinct keys per tree.
        self._owners: dict[tuple[int, int, int], tuple[str | None, str]] = {}

    def visit(self, task: DirTask, out: list[str]) -> list[DirTask]:
        local, path = task
        try:
            fd = os.open(local, _DIR_FLAGS)
        except FileNotFoundError:
            self.counts.add(0, 0, 1, 0, 0)
            return []
        except OSError as exc:
            # ENOTDIR/ELOOP: replaced by a file or a symlink since it was listed.
            if exc.errno not in (20, 40):
                log.debug("cannot open %r: %s", local, exc)
                self.counts.add(0, 1, 0, 0, 0)
            return []
        try:
            dmtime = os.fstat(fd).st_mtime_ns
            cache = self._cache
            if self._incremental and cache is not None:
                subdirs = cache.unchanged(path, dmtime)
                if subdirs is not None:
                    out.append(f'{{"op":"dir_done","scan":{self._scan_q},"path":{_q(path)},"skipped":true}}')
                    self.counts.add(0, 0, 0, 0, 1)
                    pre = local + "/"
                    return [DirTask(pre + n, paths.join(path, n)) for n in subdirs]
            return self._list(fd, local, path, dmtime, out)
        finally:
            os.close(fd)

    def _list(self, fd: int, local: str, path: str, dmtime: int, out: list[str]) -> list[DirTask]:
        tail = f',"scan":{self._scan_q},"parent_mtime":{rows.seconds(dmtime)}}}'
        prefix = "/" if path == "/" else path + "/"
        qprefix = _q(prefix)[:-1]   # + _q(name)[1:] = _q(prefix + name): escapes are per character
        lprefix = local + "/"
        exclude = None if self._exclude is never else self._exclude
        recursive = self._recursive
        owners = self._owners
        subdirs: list[DirTask] = []
        names: list[str] = []
        entries = errors = vanished = 0
        complete = True
        append = out.append
        spill = self.spill
        spill_at = self.spill_at if spill is not None else 1 << 62
        base = len(out)   # rows are counted from the length of `out`, not one by one
        # The hot loop (one pass per entry): locals only, one cached lookup for the type and
        # owner fields, one f-string for the row (str() of an int costs half a %d, and the
        # times are str(ns) split 9 digits from the end rather than a divmod and a %09d).
        try:
            with os.scandir(fd) as it:
                for e in it:
                    name = e.name
                    if exclude is not None and exclude(name, prefix + name):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        vanished += 1
                        continue
                    except OSError:
                        errors += 1
                        complete = False
                        continue
                    key = (st.st_mode, st.st_uid, st.st_gid)
                    try:
                        kind, owner = owners[key]
                    except KeyError:
                        if len(owners) >= _OWNERS_MAX:
                            owners.clear()
                        kind, owner = owners[key] = _kind_owner(key)
                    if kind is None:
                        try:
                            target = os.readlink(name, dir_fd=fd)
                        except FileNotFoundError:
                            vanished += 1
                            continue
                        except OSError:
                            errors += 1
                            complete = False
                            continue
                        kind = f'"symlink","target":{_q(target)}'
                    elif kind == '"dir"':
                        names.append(name)
                        if recursive:
                            subdirs.append(DirTask(lprefix + name, prefix + name))
                    mns = st.st_mtime_ns
                    cns = st.st_ctime_ns
                    mt = str(mns) if mns >= _NS else _digits(mns)
                    ct = str(cns) if cns >= _NS else _digits(cns)
                    append(f'{{"op":"upsert","path":{qprefix}{_q(name)[1:]},"type":{kind},'
                           f'"size":{st.st_size},'
                           f'"mtime":{mt[:-9]}.{mt[-9:]},"ctime":{ct[:-9]}.{ct[-9:]},{owner}{tail}')
                    if len(out) >= spill_at:
                        assert spill is not None
                        entries += len(out) - base
                        spill(out)   # empties `out`
                        base = 0
        except OSError as exc:
            # The listing broke off (directory removed, stale NFS handle): no DirDone for it.
            log.debug("listing %r broke off: %s", local, exc)
            errors += 1
            complete = False
        entries += len(out) - base
        if complete:
            append(f'{{"op":"dir_done","scan":{self._scan_q},"path":{_q(path)},"skipped":false}}')
            if self._cache is not None:
                self._cache.remember(path, dmtime, names)
        self.counts.add(entries, errors, vanished, 1 if complete else 0, 0)
        return subdirs


@dataclass
class ScanResult:
    scan_id: str
    kind: str
    ok: bool
    entries: int
    errors: int
    vanished: int
    dirs: int
    skipped: int
    elapsed: float
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.entries / self.elapsed if self.elapsed > 0 else 0.0


async def run_scan(
    root: str,
    sink: Sink,
    *,
    kind: str,
    path: str = "/",
    recursive: bool = True,
    job_id: str | None = None,
    scan_id: str | None = None,
    workers: int = 4,
    limiter: trio.CapacityLimiter | None = None,
    exclude: Callable[[str, str], bool] | None = None,
    cache: AuditCache | None = None,
    incremental: bool = False,
    chunk: int = 2000,
    fault: Callable[[], str | None] | None = None,
    progress_every: float = 30.0,
) -> ScanResult:
    """One framed scan of `path` under the local `root`: scan_start, the entry itself, rows and
    DirDones, scan_end (always, also when the scan fails or is cancelled... as far as the sink
    still works). `fault()` names a root problem (missing, unmounted): then nothing but
    scan_start and a failed scan_end is sent, so an absent source never looks empty."""
    scan_id = scan_id or new_scan_id(kind)
    exclude = exclude or compile_excludes(())
    lister = Lister(scan_id, exclude=exclude, recursive=recursive, cache=cache,
                    incremental=incremental)
    counts = lister.counts
    t0 = time.monotonic()
    await sink([rows.scan_start(scan_id, kind, path, recursive=recursive, job_id=job_id)])
    error: str | None = None
    ok = True
    try:
        problem = fault() if fault is not None else None
        if problem is not None:
            ok, error = False, problem
        else:
            local = root.rstrip("/") + ("" if path == "/" else path)
            top = await _top_row(local, path, scan_id, counts)
            if top is None:
                # The scanned path does not exist: for the root that is a fault, for a find
                # it is simply nothing to report.
                if path == "/":
                    ok, error = False, "root_missing"
            else:
                row, is_dir = top
                await sink([row])
                if is_dir:
                    walker = Walker(lister.visit, sink, workers=workers, limiter=limiter,
                                    chunk=chunk, probe=True)
                    lister.spill = walker.spill
                    lister.spill_at = max(4 * chunk, 256)
                    with unwrap_group():
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(_progress, kind, scan_id, counts, t0,
                                               progress_every)
                            await walker.run([DirTask(local, path)])
                            nursery.cancel_scope.cancel()
                if path == "/" and fault is not None:
                    # Unmounted while we walked: say so rather than let it look complete.
                    problem = fault()
                    if problem is not None:
                        ok, error = False, problem
    except BaseException as exc:
        ok = False
        error = "cancelled" if isinstance(exc, trio.Cancelled) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        elapsed = time.monotonic() - t0
        end = rows.scan_end(scan_id, ok=ok, entries=counts.entries, errors=counts.errors,
                            error=error)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(10 if ok or error != "cancelled" else 2):
                try:
                    await sink([end])
                except Exception as exc:  # the sink's own failure is what propagates
                    log.debug("scan_end of %s not sent: %s", scan_id, exc)
    return ScanResult(scan_id, kind, ok, counts.entries, counts.errors, counts.vanished,
                      counts.dirs, counts.skipped, elapsed, error)


async def _top_row(local: str, path: str, scan_id: str, counts: ScanCounts) -> tuple[str, bool] | None:
    def stat_top() -> tuple[str, bool] | None:
        try:
            st = os.lstat(local)
            target = os.readlink(local) if _S_ISLNK(st.st_mode) else None
        except FileNotFoundError:
            return None
        parent_mtime = None
        if path != "/":
            try:
                parent_mtime = rows.seconds(os.lstat(os.path.dirname(local)).st_mtime_ns)
            except OSError:
                pass
        counts.add(1, 0, 0, 0, 0)
        return (rows.upsert(path, st, target=target, scan=scan_id, parent_mtime=parent_mtime),
                _S_ISDIR(st.st_mode))
    return await trio.to_thread.run_sync(stat_top)


async def _progress(kind: str, scan_id: str, counts: ScanCounts, t0: float, every: float) -> None:
    while True:
        await trio.sleep(every)
        elapsed = time.monotonic() - t0
        log.info("%s %s: %d entries, %d directories so far (%.0f entries/s, %.0f s)",
                 kind, scan_id, counts.entries, counts.dirs, counts.entries / elapsed, elapsed)


# ---------------------------------------------------------------------------- bench
async def scan_to_null(root: str, *, workers: int = 4, chunk: int = 2000) -> ScanResult:
    """Scan `root` as a snapshot into a sink that only counts rows and bytes (bench)."""
    size = [0, 0]

    async def sink(batch: list[str]) -> None:
        size[0] += len(batch)
        size[1] += sum(map(len, batch))

    return await run_scan(root, sink, kind="snapshot", workers=workers, chunk=chunk)


async def scan_to_null_sender(root: str, *, workers: int = 4, batch_size: int = 2000) -> ScanResult:
    """Scan `root` through the real Batcher/Session/httpx path into a transport that accepts
    every batch without a network (bench: the agent's own cost up to the wire)."""
    import httpx

    from fustor.agent.sender import Batcher, FusionClient, Session, SessionInfo
    from fustor.config import SenderConfig

    def accept(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"applied": 0})

    client = FusionClient(SenderConfig(id="null", uri="http://null.invalid", key="k"),
                          transport=httpx.MockTransport(accept))
    session = Session(client, SessionInfo(session_id="s", pipe_id="p", role="leader",
                                          max_batch_events=batch_size))
    batcher = Batcher(session, batch_size)
    try:
        res = await run_scan(root, batcher, kind="snapshot", workers=workers, chunk=batch_size)
        await batcher.flush()
    finally:
        await client.aclose()
    return res


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="scan a tree into a null sink and print the rate")
    ap.add_argument("root")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--sender", action="store_true",
                    help="go through the batcher, JSON bodies and httpx (null transport)")
    args = ap.parse_args(argv)
    fn = scan_to_null_sender if args.sender else scan_to_null
    res = trio.run(lambda: fn(os.path.abspath(args.root), workers=args.workers))
    print(f"entries={res.entries} dirs={res.dirs} errors={res.errors} vanished={res.vanished} "
          f"elapsed={res.elapsed:.3f}s rate={res.rate:.0f}/s ok={res.ok}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
