"""Talking to a Fusion receiver: one httpx.AsyncClient per sender, sessions, batches.

This is the one place where httpx errors and HTTP statuses become fustor errors:
transport errors and 5xx → UnavailableError, 401 → AuthError, 403 → ScopeError,
410 → SessionExpiredError, 413 → TooLargeError, 400/422 → ProtocolError, 404 → NotFoundError.
`Session.send` posts rows in batches with a per-session `seq`; it retries the same batch
(same seq) on UnavailableError with backoff, slowly on 401/403, splits on 413, and lets
SessionExpiredError go up (the pipe opens a new session and resends).
"""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from fustor import protocol
from fustor.agent import rows as rowfmt
from fustor.backoff import Backoff
from fustor.config import SenderConfig
from fustor.errors import (
    ERRORS_BY_STATUS,
    AuthError,
    FustorError,
    ProtocolError,
    ScopeError,
    SessionExpiredError,
    TooLargeError,
    UnavailableError,
)

log = logging.getLogger(__name__)

CAPABILITIES = ["realtime", "snapshot", "audit", "full_audit", "sentinel", "find"]
POLL_WAIT = 25.0
AUTH_RETRY = (10.0, 120.0)   # 401/403: a misconfiguration; retry slowly (initial, max)


@dataclass
class SessionInfo:
    session_id: str
    pipe_id: str
    role: str
    session_timeout: float = 30.0
    heartbeat_interval: float = 10.0
    audit_interval: float = 600.0
    full_audit_interval: float = 7 * 86400.0
    sentinel_interval: float = 120.0
    hot_file_threshold: float = 60.0
    max_batch_events: int = 10000
    max_batch_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionInfo:
        try:
            return cls(
                session_id=str(d["session_id"]), pipe_id=str(d.get("pipe_id", "")),
                role=str(d.get("role", "follower")),
                session_timeout=float(d.get("session_timeout_seconds", 30.0)),
                heartbeat_interval=float(d.get("heartbeat_interval_sec", 10.0)),
                audit_interval=float(d.get("audit_interval_sec", 600.0)),
                full_audit_interval=float(d.get("full_audit_interval_sec", 7 * 86400.0)),
                sentinel_interval=float(d.get("sentinel_interval_sec", 120.0)),
                hot_file_threshold=float(d.get("hot_file_threshold", 60.0)),
                max_batch_events=int(d.get("max_batch_events", 10000)),
                max_batch_bytes=int(d.get("max_batch_bytes", 64 * 1024 * 1024)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"unexpected session answer from Fusion: {d!r}") from exc


class FusionClient:
    """Typed wrapper over one httpx.AsyncClient for one sender (uri + push key)."""

    def __init__(self, config: SenderConfig, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.url = config.uri
        self._http = httpx.AsyncClient(
            base_url=config.uri,
            headers={protocol.KEY_HEADER: config.key, "Content-Type": "application/json"},
            timeout=httpx.Timeout(config.timeout_sec),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, body: bytes | None = None,
                      params: dict[str, Any] | None = None,
                      wait: float | None = None) -> Any:
        """One request; `wait` overrides the client timeout (long polls)."""
        try:
            resp = await self._http.request(
                method, path, content=body, params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if wait is None else httpx.Timeout(wait))
        except httpx.TimeoutException as exc:
            raise UnavailableError(f"{self.url}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise UnavailableError(f"{self.url}: cannot reach Fusion ({exc or type(exc).__name__})") from exc
        status = resp.status_code
        if status < 300:
            if status == 204 or not resp.content:
                return None
            try:
                return resp.json()
            except ValueError as exc:
                raise UnavailableError(f"{self.url}: answer is not JSON (HTTP {status})") from exc
        message = f"HTTP {status}"
        details: dict[str, Any] = {}
        try:
            data = resp.json()
            if isinstance(data, dict):
                message = str(data.get("message") or message)
                details = {k: v for k, v in data.items() if k not in ("message", "error")}
        except ValueError:
            if resp.text:
                message = f"HTTP {status}: {resp.text[:200]}"
        if status >= 500:   # 503 (not ready) included: Fusion trouble, retried
            raise UnavailableError(f"{self.url}: {message}", status=status)
        err = ERRORS_BY_STATUS.get(status, ProtocolError)(message)
        err.details.update(details)
        err.details["status"] = status
        raise err

    # -------------------------------------------------------------- endpoints
    async def open_session(self, agent_id: str, source_uri: str) -> SessionInfo:
        body = json.dumps({
            "agent_id": agent_id, "host": socket.gethostname(), "source_uri": source_uri,
            "capabilities": CAPABILITIES, "version": _version(),
        }).encode()
        data = await self.request("POST", f"{protocol.PIPE_PREFIX}/sessions", body=body)
        if not isinstance(data, dict):
            raise ProtocolError(f"unexpected session answer from Fusion: {data!r}")
        return SessionInfo.from_json(data)

    async def close_session(self, sid: str) -> None:
        await self.request("DELETE", f"{protocol.PIPE_PREFIX}/sessions/{sid}")

    async def heartbeat(self, sid: str, status: dict[str, Any]) -> str | None:
        data = await self.request("POST", f"{protocol.PIPE_PREFIX}/sessions/{sid}/heartbeat",
                                  body=json.dumps({"status": status}).encode())
        return _role(data)

    async def poll_commands(self, sid: str, after: int,
                            wait: float = POLL_WAIT) -> tuple[str | None, list[dict[str, Any]]]:
        data = await self.request(
            "GET", f"{protocol.PIPE_PREFIX}/sessions/{sid}/commands",
            params={"after": after, "wait": wait}, wait=wait + self.config.timeout_sec)
        cmds = data.get("commands", []) if isinstance(data, dict) else []
        return _role(data), [c for c in cmds if isinstance(c, dict)]

    async def post_batch(self, sid: str, body: bytes) -> dict[str, Any]:
        data = await self.request("POST", f"{protocol.PIPE_PREFIX}/sessions/{sid}/events",
                                  body=body)
        return data if isinstance(data, dict) else {}

    async def sentinel_targets(self, sid: str, limit: int) -> dict[str, list[str]]:
        data = await self.request("GET", f"{protocol.PIPE_PREFIX}/sessions/{sid}/sentinel",
                                  params={"limit": limit})
        out: dict[str, list[str]] = {}
        if isinstance(data, dict):
            for key in ("suspects", "recent"):
                v = data.get(key, [])
                out[key] = [p for p in v if isinstance(p, str)] if isinstance(v, list) else []
        return out


def _role(data: object) -> str | None:
    if isinstance(data, dict) and data.get("role") in ("leader", "follower"):
        return str(data["role"])
    return None


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("fustor")
    except Exception:
        return "0"


class Retrier:
    """Waits between tries of one kind of request; logs once per state change."""

    def __init__(self, name: str, what: str) -> None:
        self.name = name
        self.what = what
        self._backoff = Backoff(0.5, 30.0)
        self._auth = Backoff(*AUTH_RETRY)
        self._trouble: str | None = None

    @property
    def failing(self) -> bool:
        return self._trouble is not None

    async def failed(self, exc: FustorError) -> None:
        auth = isinstance(exc, AuthError | ScopeError)
        state = type(exc).__name__
        if self._trouble != state:
            if auth:
                log.error("pipe %s: %s refused (%s): check the sender's credential key and "
                          "Fusion's receiver api_keys; retrying slowly", self.name, self.what,
                          exc.message)
            else:
                log.warning("pipe %s: %s failed, retrying: %s", self.name, self.what,
                            exc.message)
            self._trouble = state
        await trio.sleep(self._auth.next() if auth else self._backoff.next())

    def ok(self) -> None:
        if self._trouble is not None:
            log.info("pipe %s: %s works again", self.name, self.what)
            self._trouble = None
        self._backoff.reset()
        self._auth.reset()


RETRYABLE = (UnavailableError, AuthError, ScopeError)


class Session:
    """One live session: its seq counter and the retrying batch sender."""

    def __init__(self, client: FusionClient, info: SessionInfo, *, name: str = "") -> None:
        self.client = client
        self.info = info
        self.id = info.session_id
        self.role = info.role
        self.name = name or info.pipe_id
        self._seq = 0
        self._retry = Retrier(self.name, "sending events")
        self.batches_sent = 0
        self.rows_sent = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def send(self, batch_rows: list[str]) -> None:
        """Post `batch_rows` (already JSON) in batches; returns when all are applied."""
        limit_n = max(1, self.info.max_batch_events)
        limit_b = max(1024, self.info.max_batch_bytes - 64)
        n = len(batch_rows)
        if n <= limit_n and sum(map(len, batch_rows)) + n <= limit_b:
            await self._post(batch_rows)     # the usual case, sized in C rather than per row
            return
        start = 0
        while start < n:
            end, size = start, 0
            while end < n and end - start < limit_n:
                size += len(batch_rows[end]) + 1
                if size > limit_b and end > start:
                    break
                end += 1
            await self._post(batch_rows[start:end])
            start = end

    async def _post(self, chunk: list[str]) -> None:
        seq = self.next_seq()
        body = rowfmt.body(seq, chunk)
        while True:
            try:
                await self.client.post_batch(self.id, body)
            except RETRYABLE as exc:
                await self._retry.failed(exc)
                continue
            except TooLargeError:
                if len(chunk) == 1:
                    log.error("pipe %s: a single row is over Fusion's batch limit; dropped: %.200s",
                              self.name, chunk[0])
                    return
                half = len(chunk) // 2
                # The seq was not applied (413 applies nothing): reuse is harmless but a fresh
                # one per half keeps "one seq, one body".
                await self._post(chunk[:half])
                await self._post(chunk[half:])
                return
            except SessionExpiredError:
                raise
            except ProtocolError as exc:
                # Fusion refused the batch as malformed: resending the same body cannot help.
                log.error("pipe %s: Fusion refused a batch of %d rows: %s", self.name,
                          len(chunk), exc.message)
                return
            self._retry.ok()
            self.batches_sent += 1
            self.rows_sent += len(chunk)
            return


class Batcher:
    """A scan sink: gathers rows and sends full batches through the session."""

    def __init__(self, session: Session, batch_size: int) -> None:
        self._session = session
        self._size = max(1, min(batch_size, session.info.max_batch_events))
        self._rows: list[str] = []

    async def __call__(self, batch: list[str]) -> None:
        self._rows.extend(batch)
        while len(self._rows) >= self._size:
            head = self._rows[: self._size]
            del self._rows[: self._size]
            await self._session.send(head)

    async def flush(self) -> None:
        if self._rows:
            head, self._rows = self._rows, []
            await self._session.send(head)
