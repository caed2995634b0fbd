"""Everything Fusion holds at run time, built from a FusionConfig: views, pipes, keys, sessions,
jobs; readiness per pipe; `apply_config` for reload (unchanged views and pipes keep their trees).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fustor.config import FusionConfig, FusionPipeConfig
from fustor.errors import NotFoundError, NotReadyError
from fustor.protocol import ScanEnd, ScanStart
from fustor_fusion.auth import KeyRing
from fustor_fusion.jobs import RUNNING, Job, JobRegistry
from fustor_fusion.sessions import Session, SessionRegistry
from fustor_fusion.view import View

log = logging.getLogger(__name__)

RETRY_AFTER_SEC = 5

# Pipe states as the API shows them (docs/API.md "Response metadata").
NO_LEADER, SNAPSHOT, READY, STALE = "no_leader", "snapshot", "ready", "stale"


@dataclass(eq=False)
class PipeRuntime:
    """One pipe's config and live counters (the trees live in the views)."""

    config: FusionPipeConfig
    views: list[View] = field(default_factory=list)
    events_applied: int = 0
    batches: int = 0
    duplicates: int = 0
    last_batch_at: float | None = None   # wall clock of the last applied batch
    last_seen: float | None = None       # wall clock of the last request of any of its agents
    ingest_lag_sec: float = 0.0          # last batch: received → applied

    @property
    def id(self) -> str:
        return self.config.id


class FusionState:
    def __init__(
        self,
        config: FusionConfig,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._mono = mono
        self.config = config
        self.views: dict[str, View] = {}
        self.pipes: dict[str, PipeRuntime] = {}
        self.auth = KeyRing(config)          # rebuilt by every _link
        self.sessions = SessionRegistry(self._timeout_of, mono=mono, wall=wall)
        self.jobs = JobRegistry(mono=mono, wall=wall)
        self.sessions.on_end.append(self.jobs.session_ended)
        self.sessions.on_end.append(self._session_ended)
        self.sessions.on_leader.append(self._leader_changed)
        self.started_at = wall()
        self._build(config)

    # ------------------------------------------------------------------ config
    def _timeout_of(self, pipe_id: str) -> float:
        if pipe_id in self.config.pipes:
            return self.config.pipe_timeout(pipe_id)
        return self.config.session_timeout_seconds

    def _new_view(self, vid: str, config: FusionConfig) -> View:
        pids = [p.id for p in config.pipes.values() if vid in p.views]
        view = View(config.views[vid], pids, wall=self._wall, mono=self._mono)
        view.on_scan_end = self._scan_hook(vid)
        return view

    def _scan_hook(self, vid: str) -> Callable[[str, ScanEnd, ScanStart], None]:
        def scan_ended(pipe_id: str, end: ScanEnd, start: ScanStart) -> None:
            # Every end of a job's scan, also those the view abandons (their agent is gone).
            if start.job_id:
                self.jobs.scan_closed(vid, pipe_id, start.job_id, end)
        return scan_ended

    def _build(self, config: FusionConfig) -> None:
        for vid in config.views:
            self.views[vid] = self._new_view(vid, config)
        for pid, pc in config.pipes.items():
            self.pipes[pid] = PipeRuntime(pc)
        self._link(config)

    def _link(self, config: FusionConfig) -> None:
        self.config = config
        for pid, rt in self.pipes.items():
            rt.views = [self.views[v] for v in config.pipes[pid].views]
        self.auth = KeyRing(config)

    def apply_config(self, new: FusionConfig) -> dict[str, list[str]]:
        """Switch to `new`: add/remove views and pipes; a view whose pipes or parameters changed
        is rebuilt (its pipes' agents are disconnected so their leaders snapshot it again);
        unchanged views keep their trees. Returns what changed, for the log."""
        old = self.config
        changes: dict[str, list[str]] = {"views_added": [], "views_removed": [],
                                         "views_rebuilt": [], "pipes_added": [],
                                         "pipes_removed": [], "pipes_reset": []}
        resync: set[str] = set()
        for vid in list(self.views):
            if vid not in new.views:
                del self.views[vid]
                self.jobs.forget_view(vid)
                changes["views_removed"].append(vid)
        for vid, vc in new.views.items():
            new_pipes = [p.id for p in new.pipes.values() if vid in p.views]
            view = self.views.get(vid)
            if view is None:
                self.views[vid] = self._new_view(vid, new)
                changes["views_added"].append(vid)
                resync.update(p for p in new_pipes if p in old.pipes)
            elif old.views[vid].driver_params != vc.driver_params:
                self.views[vid] = self._new_view(vid, new)
                changes["views_rebuilt"].append(vid)
                resync.update(p for p in new_pipes if p in old.pipes)
            else:
                view.config = vc
                for pid in view.pipe_ids:
                    if pid not in new_pipes:
                        view.remove_pipe(pid)
                for pid in new_pipes:
                    if pid not in view.pipe_ids:
                        view.add_pipe(pid)
                        if pid in old.pipes:
                            resync.add(pid)
        for pid in list(self.pipes):
            if pid not in new.pipes:
                del self.pipes[pid]
                self.sessions.forget_pipe(pid)
                changes["pipes_removed"].append(pid)
        for pid, pc in new.pipes.items():
            rt = self.pipes.get(pid)
            if rt is None:
                self.pipes[pid] = PipeRuntime(pc)
                changes["pipes_added"].append(pid)
                continue
            if rt.config.receiver != pc.receiver:
                resync.add(pid)
            rt.config = pc
        self._link(new)
        for pid in sorted(resync):
            if pid in self.pipes:
                self.sessions.drop_pipe(pid, "configuration reloaded: reconnect and snapshot")
                changes["pipes_reset"].append(pid)
        # A receiver key that moved to another pipe must not keep driving the old one.
        for s in list(self.sessions.by_id.values()):
            if s.pipe_id not in self.pipes:
                self.sessions.end(s.id, "pipe removed from the configuration")
        return {k: v for k, v in changes.items() if v}

    def _views_of(self, pipe_id: str) -> list[View]:
        rt = self.pipes.get(pipe_id)
        return [v for v in (rt.views if rt else []) if pipe_id in v.pipe_ids]

    def _session_ended(self, s: Session, reason: str) -> None:
        # The scans it started will never end: forget them (no missing-item removal).
        for view in self._views_of(s.pipe_id):
            n = view.abort_scans(s.pipe_id, f"the session of agent {s.agent_id} ended ({reason})",
                                 only=list(s.scans))
            if n:
                log.info("view %s: aborted %d scan(s) of agent %s on pipe %s (session ended)",
                         view.id, n, s.agent_id, s.pipe_id)

    def _leader_changed(self, pipe_id: str, leader: Session | None) -> None:
        # Scans that no live session started (a lost leader's, or of unknown origin) will
        # never end; the followers' finds go on.
        live = {scan for x in self.sessions.sessions_of(pipe_id) for scan in x.scans}
        for view in self._views_of(pipe_id):
            n = view.abort_scans(pipe_id, keep=live)
            if n:
                log.info("view %s: aborted %d scan(s) of pipe %s (leader changed)",
                         view.id, n, pipe_id)

    # ------------------------------------------------------------------ auth (auth.py)
    def receiver_pipe(self, receiver_id: str, key: str | None) -> str:
        """The pipe a push key opens on receiver `receiver_id` (401 unknown, 403 wrong scope)."""
        return self.auth.receiver_pipe(receiver_id, key, self.pipes)

    def check_view_access(self, view_id: str, key: str | None, remote: str | None) -> View:
        """The view `view_id` if `key` may read it (401/403), else 404 for an unknown view."""
        return self.auth.view_access(view_id, key, remote, self.view)

    def check_management(self, key: str | None, remote: str | None) -> None:
        self.auth.management(key, remote)

    def view(self, view_id: str) -> View:
        v = self.views.get(view_id)
        if v is None:
            raise NotFoundError(f"no view {view_id!r} (known: {', '.join(sorted(self.views)) or 'none'})",
                                view=view_id)
        return v

    # ------------------------------------------------------------------ readiness
    def pipe_ids_of(self, view: View) -> list[str]:
        return [p for p, rt in self.pipes.items() if view in rt.views]

    def pipe_state(self, view: View, pipe_id: str) -> dict[str, Any]:
        ps = self.sessions.pipes.get(pipe_id)
        leader = ps.leader if ps else None
        sessions = len(ps.sessions) if ps else 0
        if view.snapshot_done(pipe_id):
            state = READY if sessions else STALE
            reason = None if sessions else "no agent connected; serving the last known tree"
        elif ps is None or not ps.ever_led:
            state, reason = NO_LEADER, "no agent has connected for this pipe yet"
        else:
            state = SNAPSHOT
            failed = view.tree_of(pipe_id).finished.get("snapshot")
            if leader is None:
                reason = "the first snapshot did not finish and no agent is connected"
            elif failed is not None and not view.snapshot_running(pipe_id):
                reason = (f"the first snapshot failed ({failed['error'] or 'no reason given'}); "
                          "waiting for the leader's retry")
            else:
                reason = "the first snapshot is running"
        return {"state": state, "leader": leader.agent_id if leader else None,
                "stale": state == STALE, "sessions": sessions, "reason": reason}

    def meta(self, view: View, *, allow_partial: bool = False) -> dict[str, Any]:
        """Response metadata; raises NotReadyError (503) unless ready or `allow_partial`."""
        pipes = {pid: self.pipe_state(view, pid) for pid in self.pipe_ids_of(view)}
        waiting = {pid: p for pid, p in pipes.items() if p["state"] in (NO_LEADER, SNAPSHOT)}
        if waiting and not allow_partial:
            why = "; ".join(f"{pid}: {p['reason']}" for pid, p in waiting.items())
            raise NotReadyError(
                f"view {view.id!r} is not ready ({why}); retry later or pass allow_partial=true",
                retry_after=RETRY_AFTER_SEC,
                pipes={pid: {"state": p["state"], "reason": p["reason"]} for pid, p in waiting.items()},
            )
        for p in pipes.values():
            del p["reason"]
            del p["sessions"]
        return {"partial": bool(waiting), "logical_clock": self.logical_clock(view),
                "pipes": pipes}

    def logical_clock(self, view: View) -> float:
        return round(view.logical_clock(), 3)

    # ------------------------------------------------------------------ jobs
    def start_find(self, view: View, path: str, recursive: bool) -> str:
        targets: list[tuple[str, Session | None]] = [
            (pid, self.sessions.leader_of(pid)) for pid in self.pipe_ids_of(view)]
        job, _ = self.jobs.find_or_create(view.id, path, recursive, targets)
        return job.job_id

    def job_json(self, job: Job) -> dict[str, Any]:
        """The job as the API shows it; a running agent's entries are those its scan has
        sent so far (the job itself learns the count at the scan's end)."""
        out = job.to_json()
        view = self.views.get(job.view)
        if view is None:
            return out
        for key, a in job.agents.items():
            if a.state == RUNNING and a.scan is not None and a.pipe_id in view.pipe_ids:
                sc = view.tree_of(a.pipe_id).scans.get(a.scan)
                if sc is not None:
                    out["agents"][key]["entries"] = sc.entries
        return out

    # ------------------------------------------------------------------ janitor
    def tick(self) -> None:
        """Periodic housekeeping (about once a second)."""
        self.sessions.expire()
        for v in list(self.views.values()):
            v.expire()
        self.jobs.prune()

    def status(self) -> dict[str, Any]:
        return {
            "views": sorted(self.views),
            "pipes": {pid: {"sessions": len(self.sessions.sessions_of(pid)),
                            "leader": (ld.agent_id if (ld := self.sessions.leader_of(pid)) else None),
                            "events_applied": rt.events_applied}
                      for pid, rt in self.pipes.items()},
            "sessions": len(self.sessions.by_id),
            "jobs_pending": sum(1 for j in self.jobs.jobs.values() if j.state == "pending"),
        }
