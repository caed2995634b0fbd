"""Agent sessions per pipe: leader election, expiry, batch-seq dedupe and the command queue.

Sync bookkeeping plus trio Events for the command long-poll; no HTTP here. The first session of
a pipe leads; when it ends (DELETE or timeout) the oldest follower is promoted and told so by a
`role` command queued at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from fustor.errors import NotFoundError, ScopeError, SessionExpiredError

log = logging.getLogger(__name__)

MAX_WAIT_SEC = 30.0
RECENT_SEQS = 8192          # batch seqs remembered per session for dedupe
MAX_PENDING_COMMANDS = 10_000


@dataclass(eq=False)
class Session:
    id: str
    pipe_id: str
    agent_id: str
    host: str
    source_uri: str
    capabilities: tuple[str, ...]
    version: str
    role: str
    connected_at: float                  # wall clock
    last_seen: float                     # monotonic
    last_seen_wall: float
    status: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    close_reason: str = ""
    polls: int = 0                       # open command long-polls (they keep the session alive)
    commands: deque[dict[str, Any]] = field(default_factory=deque)
    next_command_seq: int = 1
    # scan id -> (kind, job_id, started mono): scans this session started, for jobs and logs
    scans: dict[str, tuple[str, str | None, float]] = field(default_factory=dict)
    _seqs: set[int] = field(default_factory=set)
    _seq_order: deque[int] = field(default_factory=deque)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def key(self) -> str:
        """How jobs and the API name this agent: `<pipe>/<agent_id>`."""
        return f"{self.pipe_id}/{self.agent_id}"

    # ------------------------------------------------------------------ batch dedupe
    def claim_seq(self, seq: int) -> bool:
        """True if `seq` is new for this session (and remember it), False for a duplicate."""
        if seq in self._seqs:
            return False
        self._seqs.add(seq)
        self._seq_order.append(seq)
        if len(self._seq_order) > RECENT_SEQS:
            self._seqs.discard(self._seq_order.popleft())
        return True

    def release_seq(self, seq: int) -> None:
        """Forget `seq` again (its batch failed): a retry is then applied, not a duplicate."""
        if seq in self._seqs:
            self._seqs.discard(seq)
            try:
                self._seq_order.remove(seq)
            except ValueError:
                pass

    # ------------------------------------------------------------------ commands
    def push_command(self, command: dict[str, Any]) -> int:
        seq = self.next_command_seq
        self.next_command_seq += 1
        self.commands.append({"seq": seq, **command})
        if len(self.commands) > MAX_PENDING_COMMANDS:
            dropped = self.commands.popleft()
            log.warning("session %s: command queue full, dropped command %s", self.id, dropped)
        self._wake()
        return seq

    def pending(self, after: int) -> list[dict[str, Any]]:
        # The agent acknowledges by passing the highest seq it handled: drop those.
        while self.commands and self.commands[0]["seq"] <= after:
            self.commands.popleft()
        return list(self.commands)

    def _wake(self) -> None:
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    async def wait_commands(self, after: int, wait: float) -> list[dict[str, Any]]:
        """Commands with seq > after; blocks up to `wait` seconds until one is queued."""
        with trio.move_on_after(min(max(wait, 0.0), MAX_WAIT_SEC)):
            while True:
                if self.closed:
                    raise SessionExpiredError(
                        f"session {self.id} ended ({self.close_reason}); create a new session",
                        session_id=self.id)
                cmds = self.pending(after)
                if cmds:
                    return cmds
                await self._changed.wait()
        if self.closed:
            raise SessionExpiredError(
                f"session {self.id} ended ({self.close_reason}); create a new session",
                session_id=self.id)
        return self.pending(after)

    def to_json(self, now_mono: float) -> dict[str, Any]:
        return {
            "session_id": self.id, "pipe_id": self.pipe_id, "agent_id": self.agent_id,
            "host": self.host, "role": self.role, "source_uri": self.source_uri,
            "capabilities": list(self.capabilities), "version": self.version,
            "connected_at": self.connected_at, "last_seen": self.last_seen_wall,
            "idle_sec": round(max(0.0, now_mono - self.last_seen), 3),
            "status": self.status,
        }


@dataclass(eq=False)
class PipeSessions:
    """The sessions of one pipe, oldest first; at most one leader."""

    pipe_id: str
    sessions: list[Session] = field(default_factory=list)
    leader: Session | None = None
    ever_led: bool = False               # some session led this pipe at least once


class SessionRegistry:
    """All sessions, by id and by pipe. `timeout_of(pipe_id)` gives the pipe's session timeout."""

    def __init__(
        self,
        timeout_of: Callable[[str], float],
        *,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.timeout_of = timeout_of
        self._mono = mono
        self._wall = wall
        self.by_id: dict[str, Session] = {}
        self.pipes: dict[str, PipeSessions] = {}
        # Called with (session, reason) after a session ended, and (pipe_id, new_leader | None)
        # after a pipe's leader changed; set by the state (jobs fail, logs).
        self.on_end: list[Callable[[Session, str], None]] = []
        self.on_leader: list[Callable[[str, Session | None], None]] = []

    def pipe(self, pipe_id: str) -> PipeSessions:
        ps = self.pipes.get(pipe_id)
        if ps is None:
            ps = self.pipes[pipe_id] = PipeSessions(pipe_id)
        return ps

    def leader_of(self, pipe_id: str) -> Session | None:
        ps = self.pipes.get(pipe_id)
        return ps.leader if ps else None

    def create(self, pipe_id: str, *, agent_id: str, host: str = "", source_uri: str = "",
               capabilities: Iterable[str] = (), version: str = "") -> Session:
        now = self._mono()
        ps = self.pipe(pipe_id)
        role = "follower" if ps.leader is not None else "leader"
        s = Session(
            id=f"s-{secrets.token_hex(8)}", pipe_id=pipe_id, agent_id=agent_id, host=host,
            source_uri=source_uri, capabilities=tuple(capabilities), version=version, role=role,
            connected_at=self._wall(), last_seen=now, last_seen_wall=self._wall(),
        )
        self.by_id[s.id] = s
        ps.sessions.append(s)
        log.info("pipe %s: session %s created for agent %s (%s) as %s",
                 pipe_id, s.id, agent_id, host or "?", role)
        if role == "leader":
            self._set_leader(ps, s)
        return s

    def get(self, session_id: str, pipe_id: str) -> Session:
        """The live session `session_id` for a request authenticated for `pipe_id`; touches it."""
        s = self.by_id.get(session_id)
        if s is None or s.closed:
            raise SessionExpiredError(
                f"session {session_id!r} is unknown or expired; create a new session",
                session_id=session_id)
        if s.pipe_id != pipe_id:
            raise ScopeError(f"session {session_id!r} belongs to another pipe than this key's")
        self.touch(s)
        return s

    def touch(self, s: Session) -> None:
        s.last_seen = self._mono()
        s.last_seen_wall = self._wall()

    def end(self, session_id: str, reason: str = "closed by the agent") -> Session:
        s = self.by_id.pop(session_id, None)
        if s is None:
            raise NotFoundError(f"session {session_id!r} is unknown or already ended")
        s.closed = True
        s.close_reason = reason
        s._wake()
        ps = self.pipe(s.pipe_id)
        ps.sessions.remove(s)
        log.info("pipe %s: session %s of agent %s ended (%s)", s.pipe_id, s.id, s.agent_id, reason)
        for cb in self.on_end:
            cb(s, reason)
        if ps.leader is s:
            nxt = ps.sessions[0] if ps.sessions else None
            if nxt is not None:
                nxt.role = "leader"
                nxt.push_command({"type": "role", "role": "leader"})
            self._set_leader(ps, nxt)
        return s

    def _set_leader(self, ps: PipeSessions, s: Session | None) -> None:
        ps.leader = s
        if s is not None:
            ps.ever_led = True
            log.info("pipe %s: leader is now agent %s (session %s)", ps.pipe_id, s.agent_id, s.id)
        else:
            log.warning("pipe %s: no leader (no agent connected)", ps.pipe_id)
        for cb in self.on_leader:
            cb(ps.pipe_id, s)

    def expire(self) -> list[Session]:
        """End the sessions idle for longer than their pipe's timeout (an open poll is alive)."""
        now = self._mono()
        gone = [s for s in self.by_id.values()
                if s.polls == 0 and now - s.last_seen > self.timeout_of(s.pipe_id)]
        for s in gone:
            self.end(s.id, f"timed out after {self.timeout_of(s.pipe_id):g}s without a request")
        return gone

    def drop_pipe(self, pipe_id: str, reason: str) -> None:
        """End every session of a pipe (pipe removed or its views changed: agents reconnect)."""
        ps = self.pipes.get(pipe_id)
        if ps is None:
            return
        for s in list(ps.sessions):
            self.end(s.id, reason)

    def forget_pipe(self, pipe_id: str) -> None:
        self.drop_pipe(pipe_id, "pipe removed from the configuration")
        self.pipes.pop(pipe_id, None)

    def sessions_of(self, pipe_id: str) -> list[Session]:
        ps = self.pipes.get(pipe_id)
        return list(ps.sessions) if ps else []

    def to_json(self, pipe_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        now = self._mono()
        wanted = None if pipe_ids is None else set(pipe_ids)
        return [s.to_json(now) for s in self.by_id.values()
                if wanted is None or s.pipe_id in wanted]
