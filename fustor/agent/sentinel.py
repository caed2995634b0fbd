"""The leader's sentinel: stat the paths Fusion names (suspects, recently modified files) and
report them as a `sentinel` scan — upsert rows for what exists, Missing rows for what is gone.
This clears cooled suspects early and catches in-place edits made on other hosts between
full audits.
"""

from __future__ import annotations

import os
import stat
import time

import trio

from fustor import paths
from fustor.agent import rows
from fustor.agent.scanner import ScanResult, Sink, new_scan_id
from fustor.errors import PathError


def stat_targets(root: str, targets: list[str], scan_id: str) -> tuple[list[str], int, int]:
    """Rows for `targets` (view paths) under `root`: (rows, entries, missing)."""
    out: list[str] = []
    entries = gone = 0
    base = root.rstrip("/")
    for path in dict.fromkeys(targets):
        try:
            paths.check(path)
        except PathError:
            continue
        local = base + ("" if path == "/" else path)
        try:
            st = os.lstat(local)
            target = os.readlink(local) if stat.S_ISLNK(st.st_mode) else None
        except FileNotFoundError:
            out.append(rows.missing(scan_id, path))
            gone += 1
            continue
        except NotADirectoryError:
            out.append(rows.missing(scan_id, path))
            gone += 1
            continue
        except OSError:
            continue
        out.append(rows.upsert(path, st, target=target, scan=scan_id))
        entries += 1
    return out, entries, gone


async def run_sentinel(root: str, targets: list[str], sink: Sink, *,
                       limiter: trio.CapacityLimiter | None = None) -> ScanResult:
    scan_id = new_scan_id("sentinel")
    t0 = time.monotonic()
    await sink([rows.scan_start(scan_id, "sentinel", "/", recursive=False)])
    ok = False
    error: str | None = "cancelled"
    entries = gone = 0
    try:
        found, entries, gone = await trio.to_thread.run_sync(
            stat_targets, root, targets, scan_id, limiter=limiter)
        await sink(found)
        ok, error = True, None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await sink([rows.scan_end(scan_id, ok=ok, entries=entries, errors=0, error=error)])
    return ScanResult(scan_id, "sentinel", ok, entries, 0, gone, 0, 0,
                      time.monotonic() - t0, error)
