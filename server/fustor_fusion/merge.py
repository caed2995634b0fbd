"""One pipe's tree plus the merge rules of DESIGN §6: `PipeTree.apply` and the realtime rules
here, the scan rules in scans.py, suspects/tombstones/blind spots/clock in marks.py (bases of
PipeTree). Sync, no I/O.

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

import time
from collections.abc import Callable, Sequence

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
from fustor_fusion.scans import ScanningTree
from fustor_fusion.tree import I_CONFIRMED, REC, Dir, Node, make_node, parent_of, rec_of

_unpack_from = REC.unpack_from
_pack = REC.pack


def _with_confirmed(node: Node, when: float) -> Node:
    vals = list(_unpack_from(rec_of(node)))
    vals[I_CONFIRMED] = when
    rec = _pack(*vals)
    if type(node) is bytes:
        return rec
    node.rec = rec  # type: ignore[union-attr]
    return node


class PipeTree(ScanningTree):
    """One pipe's tree: `apply` runs every merge rule; the realtime ones (rules 1–3) live
    here, the scan rules in scans.py, the marks (suspects, tombstones, blind spots) in
    marks.py."""

    def __init__(
        self,
        pipe_id: str,
        params: ViewParams,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(pipe_id, params, wall=wall, mono=mono)
        self.events_applied = 0
        self.last_event_at: float | None = None

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
        old = self.put(d, path, name, make_node(a, now))
        if type(old) is Dir and a.type != DIR:
            self._forget(path, old)             # its subtree went: so do the marks there
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
