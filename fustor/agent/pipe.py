"""One pipe (source → sender): its session lifecycle and what it does in each role.

Every session runs a heartbeat, the command long-poll, and the realtime sender (followers
send realtime events too). The leader also runs the snapshot (followed at once by an
incremental catch-up audit of the directories that changed while it walked), then incremental
audits (the first of a term is full), full audits and the sentinel on the intervals Fusion gave; a realtime find runs at once whatever
the role. 410 → a new session at once; transport errors and 5xx → retry with backoff;
401/403 → a clear error and slow retries. Events raised meanwhile wait in a bounded buffer;
on overflow a rescan follows once the buffer has been sent.

Choices beyond docs/PROTOCOL.md: a rescan after lost events is a full audit for the leader
and, for a follower (which may not start audits), a `find` of "/" without a job; command polls
wait at most a third of the session timeout, so a frozen agent's session still expires.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from fustor import paths
from fustor.agent.audit import AuditCache
from fustor.agent.scanner import ScanResult, run_scan
from fustor.agent.sender import (
    POLL_WAIT,
    RETRYABLE,
    Batcher,
    FusionClient,
    Retrier,
    Session,
)
from fustor.agent.sentinel import run_sentinel
from fustor.agent.source import RealtimeBuffer, SourceHub
from fustor.agent.walk import unwrap_group
from fustor.backoff import Backoff
from fustor.config import AgentConfig, AgentPipeConfig
from fustor.errors import (
    FustorError,
    NotFoundError,
    PathError,
    ProtocolError,
    SessionExpiredError,
)

log = logging.getLogger(__name__)

LINGER_SEC = 0.05          # gather realtime rows this long before a batch (≤ 1 s promised)
SENTINEL_LIMIT = 1000
FAULT_RETRY = (1.0, 30.0)


class Pipe:
    def __init__(self, config: AgentPipeConfig, agent: AgentConfig, hub: SourceHub,
                 client: FusionClient) -> None:
        self.config = config
        self.id = config.id
        self.agent_id = agent.agent_id
        self.hub = hub
        self.client = client
        self.batch_size = hub.config.driver_params.batch_size
        self.buffer = RealtimeBuffer(agent.buffer_events, name=config.id)
        self.session: Session | None = None
        self.role: str | None = None
        self.state = "connecting"
        self.scans: dict[str, ScanResult] = {}     # last result per kind
        self.running: dict[str, str] = {}          # scan id → kind, while running
        self._role_changed = trio.Event()
        self._rescan_backoff = Backoff(5.0, 600.0)
        self._last_rescan = -1e18
        self._guard: Callable[[Callable[[Session], Awaitable[None]]],
                              Callable[[], Awaitable[None]]] = _unguarded

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        w = self.hub.stats()
        faults = sorted(w.faults)
        return {
            "state": self.state, "role": self.role,
            "session_id": self.session.id if self.session else None,
            "source": self.hub.root, "sender": self.client.url,
            "watched": w.watched, "directories": w.directories, "watch_limited": w.limited,
            "faults": faults, "buffer_overflowed": self.buffer.overflowed,
            "buffered": len(self.buffer),
            "scans": {k: {"entries": r.entries, "errors": r.errors, "ok": r.ok,
                          "elapsed_sec": round(r.elapsed, 3)} for k, r in self.scans.items()},
            "running": sorted(self.running.values()),
        }

    # ------------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.hub.subscribe(self.buffer)
        try:
            task_status.started()
            await self.hub.wait_ready()
            retry = Retrier(self.id, f"connecting to {self.client.url}")
            churn = Backoff(0.5, 30.0)
            while True:
                try:
                    info = await self.client.open_session(self.agent_id, self.hub.root)
                except (*RETRYABLE, NotFoundError, ProtocolError) as exc:
                    self.state = "connecting"
                    await retry.failed(exc)
                    continue
                retry.ok()
                session = Session(self.client, info, name=self.id)
                log.info("pipe %s: connected to %s, session %s, role %s", self.id,
                         self.client.url, session.id, session.role)
                self.session = session
                began = trio.current_time()
                expired = False
                try:
                    with unwrap_group():
                        await self._serve(session)
                except SessionExpiredError as exc:
                    expired = True
                    log.warning("pipe %s: session %s ended (%s): opening a new one", self.id,
                                session.id, exc.message)
                except Exception:
                    # Supervisor boundary: a bug in one session must not end the agent.
                    log.exception("pipe %s: session %s failed; starting over", self.id,
                                  session.id)
                finally:
                    if not expired:
                        # Stopped, reloaded or failed: leave, so a follower is promoted now.
                        await self._leave()
                    self.session = None
                    self.role = None
                    self.running.clear()
                if trio.current_time() - began < 5.0:
                    await trio.sleep(churn.next())   # sessions that end at once: slow down
                else:
                    churn.reset()
        finally:
            self.hub.unsubscribe(self.buffer)

    async def _leave(self) -> None:
        s = self.session
        if s is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self.client.close_session(s.id)
                log.info("pipe %s: session %s closed", self.id, s.id)
            except FustorError as exc:
                log.debug("pipe %s: closing session %s: %s", self.id, s.id, exc.message)

    async def _serve(self, s: Session) -> None:
        lost: list[SessionExpiredError] = []
        self._set_role(s, s.role)
        async with trio.open_nursery() as nursery:
            def guarded(fn: Callable[[Session], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
                async def run() -> None:
                    try:
                        await fn(s)
                    except SessionExpiredError as exc:
                        lost.append(exc)
                        nursery.cancel_scope.cancel()
                return run
            self._guard = guarded
            for fn in (self._heartbeat_forever, self._realtime_forever, self._roles_forever):
                nursery.start_soon(guarded(fn))
            nursery.start_soon(guarded(lambda s: self._commands_forever(s, nursery)))
        if lost:
            raise lost[0]

    def _set_role(self, s: Session, role: str | None) -> None:
        if role is None or role == self.role:
            return
        if self.role is not None:
            log.info("pipe %s: role changed %s → %s", self.id, self.role, role)
        self.role = s.role = role
        self._role_changed.set()
        self._role_changed = trio.Event()

    async def _heartbeat_forever(self, s: Session) -> None:
        retry = Retrier(self.id, "heartbeat")
        while True:
            await trio.sleep(max(0.05, s.info.heartbeat_interval))
            try:
                role = await self.client.heartbeat(s.id, self.status())
            except RETRYABLE as exc:
                await retry.failed(exc)
                continue
            retry.ok()
            self._set_role(s, role)

    async def _commands_forever(self, s: Session, nursery: trio.Nursery) -> None:
        retry = Retrier(self.id, "polling commands")
        after = 0
        # An open poll keeps the session alive on Fusion's side: a poll much longer than the
        # session timeout would keep a frozen agent (SIGSTOP, a hung host) "alive" that long.
        wait = max(0.5, min(POLL_WAIT, s.info.session_timeout / 3))
        while True:
            try:
                role, cmds = await self.client.poll_commands(s.id, after, wait)
            except RETRYABLE as exc:
                await retry.failed(exc)
                continue
            retry.ok()
            self._set_role(s, role)
            for cmd in cmds:
                seq = cmd.get("seq")
                if isinstance(seq, int) and seq > after:
                    after = seq
                kind = cmd.get("type")
                if kind == "role":
                    r = cmd.get("role")
                    self._set_role(s, r if isinstance(r, str) else None)
                elif kind == "find":
                    nursery.start_soon(self._guard(functools.partial(self._find, cmd=cmd)))
                else:
                    log.warning("pipe %s: unknown command %r ignored", self.id, kind)

    async def _realtime_forever(self, s: Session) -> None:
        buf = self.buffer
        while True:
            await buf.wait()
            await trio.sleep(LINGER_SEC)
            batch = buf.peek(max(1, s.info.max_batch_events))
            await s.send(batch)
            buf.pop(len(batch))
            if not len(buf) and buf.overflowed:
                buf.overflowed = False
                log.info("pipe %s: buffered events sent after an overflow (%d dropped): "
                         "rescanning", self.id, buf.dropped)
                buf.dropped = 0
                buf.request_rescan("buffer_overflow")

    # ------------------------------------------------------------------ roles
    async def _roles_forever(self, s: Session) -> None:
        while True:
            role = self.role
            with unwrap_group():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._lead if role == "leader" else self._follow, s)
                    while self.role == role:
                        await self._role_changed.wait()
                    nursery.cancel_scope.cancel()

    async def _follow(self, s: Session) -> None:
        """A follower scans only when its own events were lost: a find of the whole tree
        (followers may not start snapshots or audits)."""
        self.state = "following"
        while True:
            reasons = await self.buffer.wait_rescan()
            await self._rescan_pause()
            log.info("pipe %s: rescanning as follower (%s)", self.id, ", ".join(reasons))
            await self._scan(s, "find")
            self.state = "following"

    async def _lead(self, s: Session) -> None:
        cache = AuditCache()   # a new term: the first audit lists everything
        faults = Backoff(*FAULT_RETRY)
        while True:
            if self.hub.check() is None:
                self.buffer.clear_rescan()
                walked = AuditCache()
                result = await self._scan(s, "snapshot", cache=walked)
                if result.ok:
                    # Rows of a directory that changed between its listing and their arrival
                    # are dropped by Fusion (DESIGN §6 rule 4, parent mtime); relist just the
                    # directories whose mtime moved while the snapshot walked, so a busy
                    # directory is whole at once rather than at the first audit.
                    await self._scan(s, "audit", cache=walked, incremental=True)
                    break
            self.state = "fault"
            await trio.sleep(faults.next())
        with unwrap_group():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sentinel_forever, s)
                await self._audit_forever(s, cache)

    async def _audit_forever(self, s: Session, cache: AuditCache) -> None:
        now = trio.current_time()
        next_audit = now + s.info.audit_interval
        next_full = now + s.info.full_audit_interval
        while True:
            self.state = "idle"
            reasons: list[str] = []
            with trio.move_on_at(min(next_audit, next_full)):
                reasons = await self.buffer.wait_rescan()
            if reasons:
                await self._rescan_pause()
                log.info("pipe %s: rescanning (%s)", self.id, ", ".join(reasons))
            now = trio.current_time()
            if reasons or now >= next_full:
                result = await self._scan(s, "full_audit", cache=cache)
                next_full = trio.current_time() + s.info.full_audit_interval
                next_audit = trio.current_time() + s.info.audit_interval
            elif now >= next_audit:
                result = await self._scan(s, "audit", cache=cache, incremental=True)
                next_audit = trio.current_time() + s.info.audit_interval
            else:
                continue
            if not result.ok:
                # A failed audit (root gone): try again soon rather than a whole interval later.
                next_audit = min(next_audit, trio.current_time() + FAULT_RETRY[1])

    async def _rescan_pause(self) -> None:
        """Rescans triggered by lost events are spaced out with a growing backoff."""
        now = trio.current_time()
        if now - self._last_rescan > 3600:
            self._rescan_backoff.reset()
        elif self._rescan_backoff.failing or now - self._last_rescan < 60:
            await trio.sleep(self._rescan_backoff.next())
        self._last_rescan = trio.current_time()

    async def _sentinel_forever(self, s: Session) -> None:
        retry = Retrier(self.id, "sentinel")
        absent = False
        while True:
            await trio.sleep(s.info.sentinel_interval)
            try:
                targets = await self.client.sentinel_targets(s.id, SENTINEL_LIMIT)
            except NotFoundError:
                if not absent:
                    log.warning("pipe %s: Fusion has no sentinel endpoint; sentinel off",
                                self.id)
                absent = True
                continue
            except RETRYABLE as exc:
                await retry.failed(exc)
                continue
            retry.ok()
            todo = list(dict.fromkeys(targets.get("suspects", []) + targets.get("recent", [])))
            if not todo or self.hub.check() is not None:
                continue
            batcher = Batcher(s, self.batch_size)
            try:
                result = await run_sentinel(self.hub.root, todo, batcher, limiter=self.hub.limiter)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await batcher.flush()
            self.scans["sentinel"] = result
            log.debug("pipe %s: sentinel checked %d paths (%d gone)", self.id, len(todo),
                      result.vanished)

    # ------------------------------------------------------------------ scans
    async def _find(self, s: Session, cmd: dict[str, Any]) -> None:
        path = cmd.get("path", "/")
        try:
            path = paths.check(path)
        except PathError as exc:
            log.warning("pipe %s: find command with a bad path ignored: %s", self.id, exc.message)
            return
        recursive = cmd.get("recursive", True)
        job = cmd.get("job_id")
        await self._scan(s, "find", path=path, recursive=bool(recursive),
                         job_id=job if isinstance(job, str) else None)

    async def _scan(self, s: Session, kind: str, *, path: str = "/", recursive: bool = True,
                    job_id: str | None = None, cache: AuditCache | None = None,
                    incremental: bool = False) -> ScanResult:
        batcher = Batcher(s, self.batch_size)
        if kind != "find":
            self.state = kind
        scan_id = f"{kind}-{self.id}-{time.time_ns():x}"
        self.running[scan_id] = kind
        t0 = time.monotonic()
        log.info("pipe %s: %s of %s started%s", self.id, kind.replace("_", " "), path,
                 f" (job {job_id})" if job_id else "")
        try:
            result = await run_scan(
                self.hub.root, batcher, kind=kind, path=path, recursive=recursive,
                job_id=job_id, scan_id=scan_id, workers=self.hub.workers,
                limiter=self.hub.limiter, exclude=self.hub.exclude, cache=cache,
                incremental=incremental, chunk=self.batch_size,
                fault=self.hub.check if path == "/" else None)
        except BaseException:
            # The end signal is already in the batcher: try to deliver it.
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await batcher.flush()
                except FustorError as exc:
                    log.debug("pipe %s: last rows of %s not sent: %s", self.id, scan_id, exc)
            raise
        finally:
            self.running.pop(scan_id, None)
        await batcher.flush()
        self.scans[kind] = result
        took = time.monotonic() - t0
        if result.ok:
            extra = f", {result.skipped} directories unchanged" if result.skipped else ""
            log.info("pipe %s: %s of %s done: %d entries, %d directories%s, %d errors in "
                     "%.1f s (%.0f entries/s)", self.id, kind.replace("_", " "), path,
                     result.entries, result.dirs, extra, result.errors, took,
                     result.entries / took if took > 0 else 0.0)
        else:
            log.warning("pipe %s: %s of %s failed: %s (%d entries sent)", self.id,
                        kind.replace("_", " "), path, result.error, result.entries)
        return result


def _unguarded(fn: Callable[[Session], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    raise RuntimeError("no session is being served")
