"""One pipe's marks beside its tree (DESIGN §6 rules 7–9): suspects with their expiry,
tombstones, blind-spot lists, recently modified files, and the pipe's logical clock.
Sync, no I/O; the merge rules (scans.py, merge.py) set and clear them.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

from fustor.clock import LogicalClock
from fustor.config import ViewParams
from fustor_fusion.tree import I_MTIME, REC, Dir, Node, Tree, parent_of, rec_of

RECENT_SEC = 86400.0
RECENT_CAP = 8192
BLIND_SPOT_CAP = 100_000   # per list and pipe; writes from other NFS clients would grow it forever

_unpack_from = REC.unpack_from
_heappush = heapq.heappush


class MarkedTree(Tree):
    """A pipe's tree with its marks (the base of PipeTree)."""

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
        self.recent: dict[str, float] = {}                     # file path → mtime (bounded)
        self._recent_floor = -math.inf                         # oldest mtime the last trim kept
        self._hot_sec = params.hot_file_threshold              # params are frozen: read once
        self._suspect_ttl = params.suspect_ttl_sec

    @property
    def watermark(self) -> float:
        return self.clock.now()

    # ------------------------------------------------------------------ rules 7–9
    def _mark_suspect(self, path: str, mtime: float) -> None:
        exp = self._mono() + self._suspect_ttl
        self.suspects[path] = (exp, mtime)
        _heappush(self._suspect_heap, (exp, path))

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
        if mtime < self._recent_floor and len(rec) >= RECENT_CAP // 2:
            # older than all the newest half kept at the last trim: the next trim would drop
            # it (a snapshot of a busy tree comes here for most rows; the sort is per 4096)
            return
        rec[path] = mtime
        if len(rec) > RECENT_CAP:
            keep = sorted(rec, key=rec.__getitem__, reverse=True)[: RECENT_CAP // 2]
            self.recent = {p: rec[p] for p in keep}
            self._recent_floor = rec[keep[-1]]

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
