"""The scan rules of one pipe's tree (DESIGN §6 rules 4–6, 8, 11): scan boundaries, scan
upserts under tombstones and the parent-mtime check, hot files, blind-spot additions and
missing-item removal at DirDone. Sync, no I/O; see merge.py for the choices made.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Container, Iterable
from typing import Any

from fustor.config import ViewParams
from fustor.protocol import DIR, FILE, DirDone, Missing, ScanEnd, ScanStart, Upsert
from fustor_fusion.marks import RECENT_SEC, MarkedTree
from fustor_fusion.tree import (
    F_PLACEHOLDER,
    I_CONFIRMED,
    I_CTIME,
    I_FLAGS,
    I_MTIME,
    REC,
    Dir,
    Node,
    child_path,
    make_node,
    mtime_of_rec,
    rec_of,
    type_of,
)

log = logging.getLogger(__name__)

AUDIT_KINDS = ("audit", "full_audit", "find")     # compensating scans: blind-spot marks
SERIAL_KINDS = ("snapshot", "audit", "full_audit")  # one at a time per leader
SCAN_IDLE_SEC = 3600.0

_unpack_from = REC.unpack_from
_pack = REC.pack
_mtime_at_8 = struct.Struct("<d").unpack_from     # REC's mtime: after the 8-byte size


class ScanState:
    __slots__ = ("start", "started", "last", "entries", "seen", "removed", "added",
                 "dirs_done")

    def __init__(self, start: ScanStart, started: float) -> None:
        self.start = start
        self.started = started                 # Fusion time of scan_start
        self.last = started                    # Fusion time of its latest row
        self.entries = 0                       # rows received
        self.seen: dict[str, set[str]] = {}    # dir path → child names seen, until its DirDone
        self.removed = 0
        self.added = 0
        self.dirs_done = 0

    def info(self) -> dict[str, Any]:
        s = self.start
        return {"scan": s.scan, "kind": s.kind, "job_id": s.job_id, "path": s.path,
                "recursive": s.recursive, "entries": self.entries, "started": self.started,
                "added": self.added, "removed": self.removed}


class ScanningTree(MarkedTree):
    """A pipe's tree with its running scans (the base of PipeTree)."""

    def __init__(
        self,
        pipe_id: str,
        params: ViewParams,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(pipe_id, params, wall=wall, mono=mono)
        self.scans: dict[str, ScanState] = {}
        self.finished: dict[str, dict[str, Any]] = {}          # kind → last finished scan
        self.snapshot_done = False
        self.orphan_rows = 0
        self.ended: list[tuple[ScanEnd, ScanStart]] = []       # drained by the view

    # ------------------------------------------------------------------ rules 4–6: scans
    def _scan_start(self, ev: ScanStart, now: float) -> None:
        # A leader runs its snapshot and audits one at a time, and one sentinel at a time: a
        # running one of those kinds belongs to a previous leader (or a crashed agent).
        serial = SERIAL_KINDS if ev.kind in SERIAL_KINDS else (ev.kind,)
        for sid, sc in list(self.scans.items()):
            if sid == ev.scan or (ev.kind != "find" and sc.start.kind in serial):
                self._abandon(sid, f"superseded by {ev.kind} scan {ev.scan}", now)
        self.scans[ev.scan] = ScanState(ev, now)

    def _abandon(self, scan_id: str, why: str, now: float) -> None:
        """End a scan that will never send scan_end: no missing-item removal; the view's
        hook still hears of it (as failed) so jobs waiting on it can finish."""
        sc = self.scans.pop(scan_id)
        log.warning("pipe %s: %s scan %s abandoned: %s", self.pipe_id, sc.start.kind,
                    scan_id, why)
        end = ScanEnd(scan=scan_id, ok=False, entries=sc.entries, errors=0, error=why)
        info = sc.info()
        info.update(finished=now, duration_sec=max(0.0, now - sc.started), ok=False,
                    errors=0, error=why, reported_entries=None)
        self.finished[sc.start.kind] = info
        self.ended.append((end, sc.start))

    def abort_scans(self, why: str = "the leader went away", *,
                    only: Iterable[str] | None = None, keep: Container[str] = ()) -> int:
        """Abandon the running scans `only` (default: all) except those in `keep` (e.g. the
        scans of a session that ended, or all but those of the live sessions)."""
        ids = [sid for sid in (self.scans if only is None else only)
               if sid in self.scans and sid not in keep]
        for sid in ids:
            self._abandon(sid, why, self._wall())
        return len(ids)

    def expire_scans(self, now: float, idle_sec: float = SCAN_IDLE_SEC) -> int:
        """Abandon scans that sent nothing for `idle_sec` (their agent is gone)."""
        ids = [sid for sid, sc in self.scans.items() if now - sc.last > idle_sec]
        for sid in ids:
            self._abandon(sid, f"no row for {idle_sec:.0f} s", now)
        return len(ids)

    def _scan_upsert(self, ev: Upsert, now: float, wm: float) -> None:
        sc = self.scans.get(ev.scan)  # type: ignore[arg-type]
        path, a = ev.path, ev.attrs
        if path == "/":
            if a.type == DIR:
                r = _unpack_from(self.root.rec)
                if r[I_FLAGS] & F_PLACEHOLDER or a.mtime > r[I_MTIME] or a.ctime > r[I_CTIME]:
                    self.root.rec = _pack(a.size, a.mtime, a.ctime, a.mode, a.uid, a.gid,
                                          r[I_CONFIRMED], 0)
            return
        i = path.rfind("/")                   # parent_of, inlined: this runs for every row
        head, name = path[:i] or "/", path[i + 1:]
        kind = ""
        if sc is None:
            self.orphan_rows += 1
        else:
            sc.entries += 1
            sc.last = now
            kind = sc.start.kind
            seen = sc.seen.get(head)
            if seen is None:
                sc.seen[head] = {name}
            else:
                seen.add(name)
        tombs = self.tombstones
        if tombs:
            t = tombs.get(path)
            if t is not None:
                if a.mtime > t[0] or a.ctime > t[0]:
                    del tombs[path]           # re-created (or changed) after the delete
                else:
                    return                    # the scan raced the delete
        d = self.get_dir(head)
        if d is None:
            if not self._parents_plausible(head, max(a.mtime, a.ctime)):
                return
            d = self.ensure_dir(head)
        old = d.children.get(name)
        if old is None:
            pm = ev.parent_mtime
            if pm is not None:
                prec = d.rec
                # flags_of and mtime_of_rec, inlined: this runs for every new row
                if not prec[-1] & F_PLACEHOLDER and _mtime_at_8(prec, 8)[0] > pm:
                    return                    # older than a change of the parent we saw
            if a.type == FILE:
                self._add(d, path, name, _pack(a.size, a.mtime, a.ctime, a.mode, a.uid, a.gid,
                                               0.0, 0))
            else:
                self._add(d, path, name, make_node(a, 0.0))
            changed = True
        else:
            r = _unpack_from(rec_of(old))
            if (a.mtime > r[I_MTIME] or a.ctime > r[I_CTIME] or r[I_FLAGS] & F_PLACEHOLDER
                    or type_of(old) != a.type):
                node = make_node(a, r[I_CONFIRMED])      # never touch confirmed_at
                self.put(d, path, name, node)
                if type(old) is Dir and a.type != DIR:
                    self._forget(path, old)      # its subtree went: so do the marks there
                changed = True
            else:
                changed = False
        if kind in AUDIT_KINDS:
            if changed:
                self._blind(self.bs_added, path, now)
                if sc is not None:
                    sc.added += 1
            if self.bs_deleted:
                self.bs_deleted.pop(path, None)
        if a.type == DIR:
            return
        mtime = a.mtime if changed else mtime_of_rec(rec_of(d.children[name]))
        hot = wm - mtime < self._hot_sec
        if kind == "sentinel":
            s = self.suspects.get(path)
            if s is not None and s[1] == mtime and not hot:
                self._clear_suspect(path)     # cooled
            elif s is not None or hot:
                self._mark_suspect(path, mtime)
        elif hot or (changed and kind == "find"):
            self._mark_suspect(path, mtime)
        if wm - mtime < RECENT_SEC:
            self._note_recent(path, mtime, now)

    def _parents_plausible(self, head: str, mtime: float) -> bool:
        """May a scan row create the missing parents of its path (see module docstring)?"""
        node: Node | None = self.root
        cur = "/"
        tombs = self.tombstones
        for part in head[1:].split("/"):
            cur = child_path(cur, part)
            if node is not None:
                if type(node) is not Dir:
                    return False
                node = node.children.get(part)
            if node is None and tombs:
                t = tombs.get(cur)
                if t is not None and mtime <= t[0]:
                    return False
        return node is None or type(node) is Dir

    def _dir_done(self, ev: DirDone, now: float) -> None:
        sc = self.scans.get(ev.scan)
        if sc is None:
            return
        sc.last = now
        seen = sc.seen.pop(ev.path, None)
        if ev.skipped or sc.start.kind == "sentinel":
            return
        sc.dirs_done += 1
        d = self.get_dir(ev.path)
        if d is None:
            return
        if seen is None:
            victims = list(d.children)
        else:
            victims = [n for n in d.children if n not in seen]
        for name in victims:
            self._remove_missing(sc, child_path(ev.path, name), now)

    def _missing(self, ev: Missing, now: float) -> None:
        sc = self.scans.get(ev.scan)
        if sc is None:
            return
        sc.entries += 1
        sc.last = now
        if self.get(ev.path) is None:
            self._clear_suspect(ev.path)
            return
        self._remove_missing(sc, ev.path, now)

    def _remove_missing(self, sc: ScanState, path: str, now: float) -> None:
        """Rule 6: a child the scan did not see, unless newer facts protect it."""
        if path in self.tombstones:
            return
        node = self.get(path)
        if node is None or _unpack_from(rec_of(node))[I_CONFIRMED] > sc.started:
            return
        self.remove(path)
        self._forget(path, node)
        self._blind(self.bs_deleted, path, now)
        sc.removed += 1

    def _scan_end(self, ev: ScanEnd, now: float) -> None:
        sc = self.scans.pop(ev.scan, None)
        if sc is None:
            log.info("pipe %s: end of unknown scan %s ignored", self.pipe_id, ev.scan)
            return
        kind = sc.start.kind
        info = sc.info()
        info.update(finished=now, duration_sec=max(0.0, now - sc.started), ok=ev.ok,
                    errors=ev.errors, error=ev.error, reported_entries=ev.entries)
        self.finished[kind] = info
        if kind == "snapshot" and ev.ok:
            # a failed one (source absent, unmounted) must not make an empty tree look served
            self.snapshot_done = True
        if kind in ("audit", "full_audit"):
            self.purge_tombstones(now)
        self.ended.append((ev, sc.start))

    def scan_running(self, kind: str) -> bool:
        return any(s.start.kind == kind for s in self.scans.values())

    def oldest_scan_start(self) -> float | None:
        return min((s.started for s in self.scans.values()), default=None)
