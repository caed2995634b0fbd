"""One pipe's tree plus the merge rules of DESIGN §6: realtime facts, scans, tombstones,
suspects, blind spots and the pipe's logical clock. Sync, no I/O.

Choices the design leaves open, and one extension:
* Freshness of a scan row also counts its ctime: an existing entry takes a scan row whose
  mtime *or ctime* is strictly newer, and a tombstone lets through a row whose mtime or ctime
  is newer than its watermark. Any inode change (chmod, chown, `touch -d past`, `cp -p` onto a
  new inode) moves ctime forward and users cannot set it, so a stale row never carries a newer
  ctime than the state it raced, while a blind chmod or backdating now converges at the next
  audit (with mtime alone it never would). A ctime-only change is a blind-spot addition too.
* A row whose parent directories are unknown creates them as placeholders (mtime 0, mode
  0o755, flagged) that the parent's own row fills in later, whatever its mtime. Realtime rows
  stamp placeholders with `confirmed_at` so a running audit cannot remove them. A scan row under
  an unknown parent is dropped when an ancestor has a tombstone at least as new as the row (it
  was listed before that ancestor was deleted or moved away) or when an ancestor is a file.
* Rows of a scan Fusion never saw start for are applied under the scan rules, without missing-
  item tracking or blind-spot marks (counted in `orphan_rows`).
* Files that a realtime find adds or changes are suspect (the user guide says so), as are hot
  scan rows; directories are never suspect.
* A sentinel row clears a suspect whose mtime is unchanged since marking and older than
  `hot_file_threshold`; otherwise it renews the mark. `Missing` removes the entry like a
  missing item of a listed directory (blind-spot deletion), with the same exceptions.
* Each blind-spot list keeps the newest `BLIND_SPOT_CAP` marks per pipe (writes from other NFS
  clients would otherwise grow it without bound); `blind_spots_dropped` counts the evicted.
* A scan that will never end (superseded by a new snapshot/audit/sentinel start, idle for
  `SCAN_IDLE_SEC`, or `abort_scans`) is abandoned: no missing-item removal, reported to the
  view's hook as a failed ScanEnd.
* Tombstones past the TTL are purged at audit end (rule 8) and also by `expire()` when no scan
  that started before them is still running, which bounds their number between long audits.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from fustor.clock import LogicalClock
from fustor.config import ViewParams
from fustor.protocol import (
    DIR,
    DirDone,
    Event,
    Missing,
    Move,
    ScanEnd,
    ScanStart,
    Upsert,
)
from fustor.protocol import (
    Delete as DeleteRow,
)
from fustor_fusion.tree import (
    F_PLACEHOLDER,
    I_CONFIRMED,
    I_CTIME,
    I_FLAGS,
    I_MTIME,
    REC,
    Dir,
    Node,
    Tree,
    child_path,
    make_node,
    parent_of,
    rec_of,
    type_of,
)

log = logging.getLogger(__name__)

AUDIT_KINDS = ("audit", "full_audit", "find")     # compensating scans: blind-spot marks
SERIAL_KINDS = ("snapshot", "audit", "full_audit")  # one at a time per leader
SCAN_IDLE_SEC = 3600.0
RECENT_SEC = 86400.0
RECENT_CAP = 8192
BLIND_SPOT_CAP = 100_000   # per list and pipe; writes from other NFS clients would grow it forever

_unpack_from = REC.unpack_from
_pack = REC.pack


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


def _with_confirmed(node: Node, when: float) -> Node:
    vals = list(_unpack_from(rec_of(node)))
    vals[I_CONFIRMED] = when
    rec = _pack(*vals)
    if type(node) is bytes:
        return rec
    node.rec = rec  # type: ignore[union-attr]
    return node


class PipeTree(Tree):
    def __init__(
        self,
        pipe_id: str,
        params: ViewParams,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.pipe_id = pipe_id
        self.params = params
        self._wall = wall
        self._mono = mono
        self.clock = LogicalClock(wall=wall)
        self.tombstones: dict[str, tuple[float, float]] = {}   # path → (watermark, fusion time)
        self.suspects: dict[str, tuple[float, float]] = {}     # path → (expiry mono, mtime)
        self._suspect_heap: list[tuple[float, str]] = []
        self.bs_added: dict[str, float] = {}                   # path → Fusion time
        self.bs_deleted: dict[str, float] = {}
        self.blind_spots_dropped = 0
        self.scans: dict[str, ScanState] = {}
        self.finished: dict[str, dict[str, Any]] = {}          # kind → last finished scan
        self.snapshot_done = False
        self.events_applied = 0
        self.orphan_rows = 0
        self.last_event_at: float | None = None
        self.recent: dict[str, float] = {}                     # file path → mtime (bounded)
        self.ended: list[tuple[ScanEnd, ScanStart]] = []       # drained by the view

    # ------------------------------------------------------------------ entry point
    def apply(self, events: Sequence[Event]) -> int:
        now = self._wall()
        # One watermark per batch: computing the clock's mode costs O(distinct skews), and a
        # batch spans about a second, the clock's resolution.
        wm = self.clock.now(now)
        for ev in events:
            t = type(ev)
            if t is Upsert:
                if ev.scan is None:  # type: ignore[union-attr]
                    self._rt_upsert(ev, now)  # type: ignore[arg-type]
                else:
                    self._scan_upsert(ev, now, wm)  # type: ignore[arg-type]
            elif t is DeleteRow:
                self._rt_delete(ev.path, now, wm)  # type: ignore[union-attr]
            elif t is Move:
                self._rt_move(ev.path, ev.dest, now, wm)  # type: ignore[union-attr]
            elif t is ScanStart:
                self._scan_start(ev, now)  # type: ignore[arg-type]
            elif t is DirDone:
                self._dir_done(ev, now)  # type: ignore[arg-type]
            elif t is Missing:
                self._missing(ev, now)  # type: ignore[arg-type]
            elif t is ScanEnd:
                self._scan_end(ev, now)  # type: ignore[arg-type]
            else:
                raise TypeError(f"not an event: {ev!r}")
        self.events_applied += len(events)
        if events:
            self.last_event_at = now
        return len(events)

    @property
    def watermark(self) -> float:
        return self.clock.now()

    # ------------------------------------------------------------------ rules 1–3: realtime
    def _rt_upsert(self, ev: Upsert, now: float) -> None:
        path, a = ev.path, ev.attrs
        self.clock.observe(a.mtime, now)
        if path == "/":
            if a.type == DIR:
                self.root.rec = _pack(a.size, a.mtime, a.ctime, a.mode, a.uid, a.gid, now, 0)
            return
        head, name = parent_of(path)
        d = self.ensure_dir(head, now)
        self.put(d, path, name, make_node(a, now))
        if self.tombstones:
            self._untomb(path)
        if self.bs_added or self.bs_deleted:
            self.bs_added.pop(path, None)
            self.bs_deleted.pop(path, None)
        if a.type == DIR:
            return
        if ev.write == "progress":
            self._mark_suspect(path, a.mtime)
        elif ev.write == "complete":
            self._clear_suspect(path)
        self._note_recent(path, a.mtime, now)

    def _rt_delete(self, path: str, now: float, wm: float) -> None:
        old = self.remove(path)
        self._tomb(path, wm, now)
        self._forget(path, old)

    def _rt_move(self, src: str, dst: str, now: float, wm: float) -> None:
        node = self.detach(src)
        self._tomb(src, wm, now)
        if node is None:
            self._forget(src, None)
            return          # unknown source: the agent's upserts for dst bring the data
        subtree = type(node) is Dir and bool(node.children)
        # The moved entry itself was renamed into place (its suspect mark clears, rule 1);
        # suspects below a moved directory follow it.
        moved: list[tuple[str, float]] = []
        if subtree and self.suspects:
            pre = src + "/"
            moved = [(dst + p[len(src):], m) for p, (_, m) in self.suspects.items()
                     if p.startswith(pre)]
        self._forget(src, node)
        # rename(2) replaces what was at dst, a directory too (put would keep its children)
        self._forget(dst, self.remove(dst))
        node = _with_confirmed(node, now)
        self.attach(dst, node, now)
        if self.tombstones:
            self._untomb(dst)
            if subtree:
                # every path of the moved subtree exists now (rule 1: no tombstone); walking
                # it costs what attaching it did, where scanning the tombstones would not
                tombs = self.tombstones
                for p, _ in self.walk(dst, node):
                    tombs.pop(p, None)
        for p, m in moved:
            self._mark_suspect(p, m)

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

    def abort_scans(self, why: str = "the leader went away") -> int:
        """Abandon every running scan (e.g. its leader's session ended)."""
        ids = list(self.scans)
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
        head, name = parent_of(path)
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
                r = _unpack_from(d.rec)
                if not r[I_FLAGS] & F_PLACEHOLDER and r[I_MTIME] > pm:
                    return                    # older than a change of the parent we saw
            self._add(d, path, name, make_node(a, 0.0))
            changed = True
        else:
            r = _unpack_from(rec_of(old))
            if (a.mtime > r[I_MTIME] or a.ctime > r[I_CTIME] or r[I_FLAGS] & F_PLACEHOLDER
                    or type_of(old) != a.type):
                node = make_node(a, r[I_CONFIRMED])      # never touch confirmed_at
                self.put(d, path, name, node)
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
        mtime = a.mtime if changed else _unpack_from(rec_of(d.children[name]))[I_MTIME]
        hot = wm - mtime < self.params.hot_file_threshold
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

    # ------------------------------------------------------------------ rules 7–9
    def _mark_suspect(self, path: str, mtime: float) -> None:
        exp = self._mono() + self.params.suspect_ttl_sec
        self.suspects[path] = (exp, mtime)
        heapq.heappush(self._suspect_heap, (exp, path))

    def _clear_suspect(self, path: str) -> None:
        if self.suspects:
            self.suspects.pop(path, None)   # its heap item is skipped lazily

    def expire_suspects(self) -> None:
        mono = self._mono()
        heap = self._suspect_heap
        while heap and heap[0][0] <= mono:
            exp, path = heapq.heappop(heap)
            s = self.suspects.get(path)
            if s is None or s[0] != exp:
                continue                      # cleared or renewed since
            node = self.get(path)
            if node is None or type(node) is Dir:
                del self.suspects[path]
                continue
            mtime = _unpack_from(rec_of(node))[I_MTIME]
            if mtime == s[1]:
                del self.suspects[path]       # cooled
            else:
                self._mark_suspect(path, mtime)
        if len(heap) > 4 * len(self.suspects) + 1024:
            self._suspect_heap = [(e, p) for p, (e, _) in self.suspects.items()]
            heapq.heapify(self._suspect_heap)

    def _blind(self, marks: dict[str, float], path: str, now: float) -> None:
        marks.pop(path, None)                 # dict order = age order
        marks[path] = now
        if len(marks) > BLIND_SPOT_CAP:
            del marks[next(iter(marks))]      # informational: keep the newest marks
            self.blind_spots_dropped += 1

    def _tomb(self, path: str, watermark: float, now: float) -> None:
        self.tombstones.pop(path, None)       # re-insert at the end: dict order = age order
        self.tombstones[path] = (watermark, now)

    def _untomb(self, path: str) -> None:
        tombs = self.tombstones
        tombs.pop(path, None)
        while path != "/" and tombs:
            path = parent_of(path)[0]
            tombs.pop(path, None)

    def purge_tombstones(self, now: float, *, before: float | None = None) -> int:
        """Drop tombstones older than the TTL (and, with `before`, older than that time)."""
        limit = now - self.params.tombstone_ttl_sec
        if before is not None:
            limit = min(limit, before)
        old = []
        for p, (_, at) in self.tombstones.items():
            if at >= limit:
                break
            old.append(p)
        for p in old:
            del self.tombstones[p]
        return len(old)

    def _forget(self, path: str, gone: Node | None) -> None:
        """Clear the suspect and blind-spot marks of `path`, and below it when `gone` (what
        was removed from `path`) had children. Only then are the marks scanned: a rename or
        an `rm -rf` (children deleted first) must not cost O(marks) per row."""
        subtree = type(gone) is Dir and bool(gone.children)
        for marks in (self.suspects, self.bs_added, self.bs_deleted):
            if marks:
                marks.pop(path, None)
                if subtree:
                    pre = path + "/"
                    for p in [p for p in marks if p.startswith(pre)]:
                        del marks[p]

    def _note_recent(self, path: str, mtime: float, now: float) -> None:
        rec = self.recent
        rec[path] = mtime
        if len(rec) > RECENT_CAP:
            keep = sorted(rec.items(), key=lambda kv: kv[1], reverse=True)[: RECENT_CAP // 2]
            self.recent = dict(keep)

    # ------------------------------------------------------------------ reading
    def recent_files(self, limit: int) -> list[str]:
        """Files modified within the last day (storage time), newest first."""
        floor = self.watermark - RECENT_SEC
        out: list[tuple[float, str]] = []
        for p in list(self.recent):
            node = self.get(p)
            if node is None or type(node) is Dir:
                del self.recent[p]
                continue
            cur = _unpack_from(rec_of(node))[I_MTIME]
            if cur < floor:
                del self.recent[p]
                continue
            out.append((cur, p))
        out.sort(reverse=True)
        return [p for _, p in out[:limit]]

    def scan_running(self, kind: str) -> bool:
        return any(s.start.kind == kind for s in self.scans.values())

    def oldest_scan_start(self) -> float | None:
        return min((s.started for s in self.scans.values()), default=None)

