"""Realtime-find jobs (DESIGN §8): one `find` command per pipe leader, per-agent progress.

Sync bookkeeping. A job is created by `force_real_time` on a view's tree endpoint; equal pending
requests share it; progress comes from the agents' scan_start/scan_end rows carrying its job_id;
it ends when every targeted agent ended, failed, lost its session or never answered in time.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fustor.errors import NotFoundError
from fustor.protocol import ScanEnd
from fustor_fusion.sessions import Session

log = logging.getLogger(__name__)

PENDING, RUNNING, DONE, FAILED, SKIPPED = "pending", "running", "done", "failed", "skipped"
TERMINAL = (DONE, FAILED, SKIPPED)


@dataclass
class AgentProgress:
    pipe_id: str
    agent_id: str | None
    session_id: str | None
    state: str = PENDING
    entries: int = 0
    errors: int = 0
    error: str | None = None
    scan: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"pipe": self.pipe_id, "agent_id": self.agent_id, "state": self.state,
                "entries": self.entries, "errors": self.errors, "error": self.error}


@dataclass
class Job:
    job_id: str
    view: str
    path: str
    recursive: bool
    created_at: float                    # wall
    created_mono: float
    state: str = PENDING
    finished_at: float | None = None
    finished_mono: float | None = None
    agents: dict[str, AgentProgress] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "view": self.view, "path": self.path,
            "recursive": self.recursive, "state": self.state, "created_at": self.created_at,
            "finished_at": self.finished_at,
            "agents": {k: a.to_json() for k, a in self.agents.items()},
        }


class JobRegistry:
    def __init__(
        self,
        *,
        job_timeout_sec: float = 600.0,
        keep_sec: float = 3600.0,
        max_jobs: int = 1000,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.job_timeout_sec = job_timeout_sec
        self.keep_sec = keep_sec
        self.max_jobs = max_jobs
        self._mono = mono
        self._wall = wall
        self.jobs: dict[str, Job] = {}           # insertion order = creation order
        self._pending: dict[tuple[str, str, bool], Job] = {}

    # ------------------------------------------------------------------ creation
    def find_or_create(self, view_id: str, path: str, recursive: bool,
                       targets: Iterable[tuple[str, Session | None]]) -> tuple[Job, bool]:
        """The pending job for (view, path, recursive), or a new one whose `find` command is
        queued at once to each pipe leader in `targets` ((pipe_id, leader or None)).
        Returns (job, created)."""
        key = (view_id, path, recursive)
        job = self._pending.get(key)
        if job is not None and job.state == PENDING:
            return job, False
        job = Job(job_id=f"j-{secrets.token_hex(8)}", view=view_id, path=path,
                  recursive=recursive, created_at=self._wall(), created_mono=self._mono())
        for pipe_id, leader in targets:
            if leader is None:
                job.agents[f"{pipe_id}/-"] = AgentProgress(
                    pipe_id, None, None, state=SKIPPED, error="the pipe has no leader connected")
                continue
            job.agents[leader.key] = AgentProgress(pipe_id, leader.agent_id, leader.id)
            leader.push_command({"type": "find", "job_id": job.job_id, "path": path,
                                 "recursive": recursive})
        self.jobs[job.job_id] = job
        self._pending[key] = job
        log.info("job %s: realtime find of %s:%s (recursive=%s) sent to %d agent(s)",
                 job.job_id, view_id, path, recursive,
                 sum(1 for a in job.agents.values() if a.state == PENDING))
        self._check_done(job)
        self.prune()
        return job, True

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id!r} (unknown or pruned)", job_id=job_id)
        return job

    def list(self, view_id: str | None = None) -> list[Job]:
        return [j for j in self.jobs.values() if view_id is None or j.view == view_id]

    # ------------------------------------------------------------------ progress
    def scan_started(self, job_id: str, session: Session, scan: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.state != PENDING:
            return
        a = job.agents.get(session.key)
        if a is None:
            # A leader promoted after the job was created answered it: count it in.
            a = job.agents[session.key] = AgentProgress(session.pipe_id, session.agent_id, session.id)
        if a.state in TERMINAL:
            return
        a.state, a.scan, a.session_id = RUNNING, scan, session.id

    def scan_ended(self, job_id: str, session: Session, end: ScanEnd) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.state != PENDING:
            return
        a = job.agents.get(session.key)
        if a is None or a.state in TERMINAL:
            return
        a.entries, a.errors = end.entries, end.errors
        a.state = DONE if end.ok else FAILED
        a.error = end.error
        self._check_done(job)

    def scan_closed(self, view_id: str, pipe_id: str, job_id: str, end: ScanEnd) -> None:
        """A view saw the find scan `end.scan` of `pipe_id` end: normally, or abandoned
        (superseded, idle, its leader gone), which the view reports as a failed ScanEnd."""
        job = self.jobs.get(job_id)
        if job is None or job.state != PENDING or job.view != view_id:
            return
        for a in job.agents.values():
            # scan None: its scan_start is in the batch being applied right now
            if a.pipe_id == pipe_id and a.scan in (None, end.scan) and a.state not in TERMINAL:
                a.entries, a.errors = end.entries, end.errors
                a.state = DONE if end.ok else FAILED
                a.error = end.error
                self._check_done(job)
                return

    def session_ended(self, session: Session, reason: str) -> None:
        for job in list(self._pending.values()):
            a = job.agents.get(session.key)
            if a is not None and a.session_id == session.id and a.state not in TERMINAL:
                a.state, a.error = FAILED, f"session ended: {reason}"
                self._check_done(job)

    def _check_done(self, job: Job) -> None:
        if job.state != PENDING or any(a.state not in TERMINAL for a in job.agents.values()):
            return
        job.state = DONE if any(a.state == DONE for a in job.agents.values()) else FAILED
        job.finished_at = self._wall()
        job.finished_mono = self._mono()
        key = (job.view, job.path, job.recursive)
        if self._pending.get(key) is job:
            del self._pending[key]
        log.info("job %s: %s in %.2fs (%s)", job.job_id, job.state,
                 job.finished_mono - job.created_mono,
                 ", ".join(f"{k}: {a.state}" for k, a in job.agents.items()) or "no agents")

    # ------------------------------------------------------------------ janitor
    def prune(self) -> None:
        """Time out agents that never answered; drop old finished jobs; bound the count."""
        now = self._mono()
        for job in list(self._pending.values()):
            if now - job.created_mono > self.job_timeout_sec:
                for a in job.agents.values():
                    if a.state not in TERMINAL:
                        a.state, a.error = FAILED, f"no answer within {self.job_timeout_sec:g}s"
                self._check_done(job)
        for jid, job in list(self.jobs.items()):
            if job.finished_mono is not None and now - job.finished_mono > self.keep_sec:
                del self.jobs[jid]
        if len(self.jobs) > self.max_jobs:
            for jid, job in list(self.jobs.items()):
                if len(self.jobs) <= self.max_jobs:
                    break
                if job.state != PENDING:
                    del self.jobs[jid]

    def forget_view(self, view_id: str) -> None:
        for jid, job in list(self.jobs.items()):
            if job.view == view_id:
                del self.jobs[jid]
                self._pending.pop((job.view, job.path, job.recursive), None)
