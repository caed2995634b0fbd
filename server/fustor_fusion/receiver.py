"""The receiver HTTP app (one per receiver port): agent sessions, command long-poll, event
batches and sentinel targets (docs/PROTOCOL.md), authenticated by the receiver's push keys.

Batches are validated whole (json.loads once, `parse_batch`), deduplicated by seq, then applied
to every view of the pipe in chunks with a checkpoint between them so queries stay responsive.
Concurrent batches of one session are independent streams (PROTOCOL.md): rows keep their order
inside a batch; chunks of two batches may interleave. Application is shielded from cancellation
so a client that hangs up never leaves half a batch applied behind a seq marked as seen.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import orjson
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestTimeout

from fustor.config import ReceiverConfig
from fustor.errors import ProtocolError, ScopeError, SessionExpiredError
from fustor.protocol import (
    KEY_HEADER,
    LEADER_ONLY_KINDS,
    PIPE_PREFIX,
    Batch,
    ScanEnd,
    ScanStart,
    parse_batch,
)
from fustor_fusion.httputil import arg_float, arg_int, install_error_handlers, json_response
from fustor_fusion.sessions import MAX_WAIT_SEC, Session
from fustor_fusion.state import FusionState, PipeRuntime

log = logging.getLogger(__name__)

# Rows applied between two checkpoints: ~0.5-1.5 ms (2-6 us per row, more with several pipes
# in a view). A query needs several scheduling rounds (read, handle, send), each of which may
# wait for one chunk, so the chunk bounds query latency during ingest a few times over.
# Measured (tests/server/fusion_bench.py, 100k rows): metadata p99 during ingest 26-34 ms with
# 500 rows, 14-25 ms with 250, ingest rate the same within noise (a checkpoint is ~10 us).
CHUNK_ROWS = 250
THREAD_PARSE_BYTES = 256 * 1024     # bigger bodies are decoded in a worker thread
# json.loads is one C call that holds the GIL throughout (~10 ns per byte): a worker thread
# decoding a 2.5 MB batch in one go would stop the event loop for 25 ms or more. Agent-shaped
# bodies are decoded in pieces of about this size instead, so the loop gets the GIL between.
DECODE_PIECE_BYTES = 128 * 1024
BODY_TIMEOUT_SEC = 120


class InvalidBatchError(ProtocolError):
    """422: a row or field of a batch is wrong; nothing of the batch was applied."""

    status = 422


Marks = list[tuple[int, ScanStart | ScanEnd]]

# The shape agents send (fustor/agent/rows.py, PROTOCOL.md): {"seq":N,"events":[{"op":...},...]}
_HEAD = re.compile(rb'[ \t\r\n]*\{"seq":(0|[1-9][0-9]{0,17}),"events":\[')
_ROW_SEP = b'},{"op":'


def _loads_in_pieces(body: bytes) -> dict[str, Any] | None:
    """The body of an agent-shaped batch, its events decoded a piece at a time (each piece a
    run of whole rows); None for any other shape, or anything a piece cannot decode, and
    the caller decodes the whole body (same result, same error messages).

    Cutting at `},{"op":` is safe: inside a JSON string a `"` is always escaped, so the
    sequence only occurs between values; if it occurs between values nested inside a row,
    the pieces on either side have unbalanced brackets and do not decode (whole decode)."""
    m = _HEAD.match(body)
    if m is None:
        return None
    end = len(body)
    while end and body[end - 1] in b" \t\r\n":
        end -= 1
    if body[end - 2:end] != b"]}":
        return None
    pos, stop = m.end(), end - 2
    events: list[Any] = []
    loads = _loads
    try:
        while pos < stop:
            cut = body.find(_ROW_SEP, pos + DECODE_PIECE_BYTES, stop)
            nxt = stop if cut < 0 else cut + 1            # the piece ends with its '}'
            piece = loads(b"".join((b"[", body[pos:nxt], b"]")))
            events.extend(piece)
            pos = nxt + 1                                 # past the ','
    except ValueError:
        return None
    return {"seq": int(m.group(1)), "events": events}


def _loads(text: bytes) -> Any:
    """json.loads, through orjson (3x faster: 0.8 instead of 2.4 us per agent row) where it
    can. orjson refuses what the stdlib accepts and the protocol allows: lone-surrogate
    escapes (names that are not UTF-8), NaN (refused later, with the row named), integers
    beyond 64 bits; those texts go to json, which gives the same values and errors."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def decode_batch(body: bytes, max_events: int) -> tuple[Batch, Marks]:
    """Parse and validate a whole batch (pure; runs in a worker thread for big bodies).
    Also returns its scan_start/scan_end rows with their index, for roles, jobs and logs."""
    data = _loads_in_pieces(body) if len(body) > DECODE_PIECE_BYTES else None
    if data is None:
        try:
            data = _loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("body: expected a JSON object with 'seq' and 'events'")
    try:
        batch = parse_batch(data, max_events=max_events)
    except ProtocolError as exc:
        raise InvalidBatchError(exc.message, **exc.details) from None
    marks: Marks = []
    for i, ev in enumerate(batch.events):
        t = type(ev)                  # per row: cheaper than isinstance with a union
        if t is ScanStart or t is ScanEnd:
            marks.append((i, ev))  # type: ignore[arg-type]
    return batch, marks


async def ingest(state: FusionState, pipe: PipeRuntime, s: Session, body: bytes,
                 max_events: int) -> dict[str, Any]:
    """Validate, dedupe and apply one batch; returns the PROTOCOL.md answer."""
    received = time.monotonic()
    if len(body) > THREAD_PARSE_BYTES:
        batch, marks = await trio.to_thread.run_sync(decode_batch, body, max_events)
    else:
        batch, marks = decode_batch(body, max_events)
    if s.closed:
        # It ended while the body was decoded (DELETE, expiry): apply nothing, agent resends.
        raise SessionExpiredError(f"session {s.id} ended ({s.close_reason}); create a new session",
                                  session_id=s.id)
    if s.role != "leader":
        for i, m in marks:
            if isinstance(m, ScanStart) and m.kind in LEADER_ONLY_KINDS:
                raise ScopeError(f"events[{i}]: only the pipe's leader may start a {m.kind} "
                                 f"scan; this session is a follower", index=i)
    if not s.claim_seq(batch.seq):
        pipe.duplicates += 1
        return {"seq": batch.seq, "applied": 0, "duplicate": True}
    events = batch.events
    n = len(events)
    views = list(pipe.views)
    for _, m in marks:
        if isinstance(m, ScanStart):
            # owned by this session from now on: a leader change between two chunks must
            # not take it for an orphan (state._leader_changed keeps live sessions' scans)
            s.scans.setdefault(m.scan, (m.kind, m.job_id, received))
    try:
        with trio.CancelScope(shield=True):
            for i in range(0, n, CHUNK_ROWS):
                chunk = events[i:i + CHUNK_ROWS] if n > CHUNK_ROWS else events
                for view in views:
                    view.apply(pipe.id, chunk)
                if i + CHUNK_ROWS < n:
                    await trio.lowlevel.checkpoint()
    except Exception:
        s.release_seq(batch.seq)        # a bug, not the batch's fault: let the retry apply it
        raise
    pipe.events_applied += n
    pipe.batches += 1
    pipe.last_batch_at = time.time()
    pipe.ingest_lag_sec = time.monotonic() - received
    state.sessions.touch(s)
    for _, m in marks:
        _scan_mark(state, s, m)
    return {"seq": batch.seq, "applied": n, "duplicate": False}


# Snapshots, full audits and finds are lifecycle events (INFO); incremental audits run every
# few minutes and sentinel checks more often, so they only show at DEBUG.
_QUIET_KINDS = ("audit", "sentinel")


def _scan_mark(state: FusionState, s: Session, m: ScanStart | ScanEnd) -> None:
    if isinstance(m, ScanStart):
        s.scans.setdefault(m.scan, (m.kind, m.job_id, time.monotonic()))
        if m.job_id:
            state.jobs.scan_started(m.job_id, s, m.scan)
        log.log(logging.DEBUG if m.kind in _QUIET_KINDS else logging.INFO,
                "pipe %s: %s scan %s of %s started by agent %s",
                s.pipe_id, m.kind, m.scan, m.path, s.agent_id)
        return
    info = s.scans.pop(m.scan, None)
    if info is None:
        return
    kind, _, started = info
    # Jobs hear of scan ends from the views' on_scan_end hook (also of abandoned scans).
    took = max(time.monotonic() - started, 1e-6)
    level = logging.DEBUG if kind in _QUIET_KINDS and m.ok else logging.INFO
    log.log(level, "pipe %s: %s scan %s %s: %d entries, %d errors in %.1fs (%.0f entries/s)%s",
            s.pipe_id, kind, m.scan, "done" if m.ok else "FAILED", m.entries, m.errors, took,
            m.entries / took, f" ({m.error})" if m.error else "")


def _key() -> str | None:
    return request.headers.get(KEY_HEADER)


async def _upload(state: FusionState, s: Session) -> bytes:
    """The body of an events request. Every chunk that arrives keeps the session alive: an
    upload is a request on the session however long it takes, but a stalled one is not."""
    parts: list[bytes] = []
    with trio.move_on_after(BODY_TIMEOUT_SEC) as scope:
        async for chunk in request.body:
            parts.append(chunk)
            state.sessions.touch(s)
    if scope.cancelled_caught:
        raise RequestTimeout(f"the batch did not arrive within {BODY_TIMEOUT_SEC:g} s")
    return b"".join(parts)


async def _json_body(required: bool = False) -> dict[str, Any]:
    raw = await request.get_data(cache=False)
    if not raw:
        if required:
            raise ProtocolError("body: expected a JSON object")
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("body: expected a JSON object")
    return data


def _opt_str(data: dict[str, Any], name: str) -> str:
    v = data.get(name, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise InvalidBatchError(f"{name}: expected a string, got {v!r}")
    return v


def create_receiver_app(state: FusionState, receiver_id: str,
                        rc: ReceiverConfig | None = None) -> QuartTrio:
    """The app of receiver `receiver_id` (its config `rc`, default: from the state's config)."""
    app = QuartTrio(f"fustor-receiver-{receiver_id}")
    rc = rc or state.config.receivers[receiver_id]
    app.config["MAX_CONTENT_LENGTH"] = rc.max_batch_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT_SEC
    install_error_handlers(app)

    def receiver() -> ReceiverConfig:
        return state.config.receivers.get(receiver_id, rc)

    def pipe_of_key() -> PipeRuntime:
        pipe = state.pipes[state.receiver_pipe(receiver_id, _key())]
        pipe.last_seen = time.time()
        return pipe

    @app.get("/api/v1/health")
    async def health() -> Response:
        return json_response({"status": "ok", "receiver": receiver_id})

    @app.post(f"{PIPE_PREFIX}/sessions")
    async def create_session() -> Response:
        pipe = pipe_of_key()
        data = await _json_body(required=True)
        agent_id = data.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id:
            raise InvalidBatchError(f"agent_id: expected a non-empty string, got {agent_id!r}")
        caps = data.get("capabilities", [])
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise InvalidBatchError(f"capabilities: expected a list of strings, got {caps!r}")
        s = state.sessions.create(pipe.id, agent_id=agent_id, host=_opt_str(data, "host"),
                                  source_uri=_opt_str(data, "source_uri"), capabilities=caps,
                                  version=_opt_str(data, "version"))
        pc = pipe.config
        timeout = state.config.pipe_timeout(pipe.id)
        hot = min((v.config.driver_params.hot_file_threshold for v in pipe.views), default=60.0)
        r = receiver()
        return json_response({
            "session_id": s.id, "pipe_id": pipe.id, "role": s.role,
            "session_timeout_seconds": timeout,
            "heartbeat_interval_sec": max(timeout / 3.0, 0.1),
            "audit_interval_sec": pc.audit_interval_sec,
            "full_audit_interval_sec": pc.full_audit_interval_sec,
            "sentinel_interval_sec": pc.sentinel_interval_sec,
            "hot_file_threshold": hot,
            "max_batch_events": r.max_batch_events, "max_batch_bytes": r.max_batch_bytes,
        }, 201)

    @app.delete(f"{PIPE_PREFIX}/sessions/<sid>")
    async def delete_session(sid: str) -> Response:
        pipe = pipe_of_key()
        state.sessions.get(sid, pipe.id)
        state.sessions.end(sid, "closed by the agent")
        return Response("", status=204)

    @app.post(f"{PIPE_PREFIX}/sessions/<sid>/heartbeat")
    async def heartbeat(sid: str) -> Response:
        pipe = pipe_of_key()
        s = state.sessions.get(sid, pipe.id)
        data = await _json_body()
        status = data.get("status")
        if status is not None:
            if not isinstance(status, dict):
                raise InvalidBatchError(f"status: expected an object, got {status!r}")
            s.status = status
        return json_response({"role": s.role})

    @app.get(f"{PIPE_PREFIX}/sessions/<sid>/commands")
    async def commands(sid: str) -> Response:
        pipe = pipe_of_key()
        s = state.sessions.get(sid, pipe.id)
        after = arg_int("after", 0, lo=0)
        wait = arg_float("wait", 25.0, lo=0.0, hi=MAX_WAIT_SEC)
        assert after is not None
        s.polls += 1
        try:
            cmds = await s.wait_commands(after, wait)
        finally:
            s.polls -= 1
            state.sessions.touch(s)
        return json_response({"role": s.role, "commands": cmds})

    @app.post(f"{PIPE_PREFIX}/sessions/<sid>/events")
    async def events(sid: str) -> Response:
        pipe = pipe_of_key()
        s = state.sessions.get(sid, pipe.id)
        body = await _upload(state, s)
        result = await ingest(state, pipe, s, body, receiver().max_batch_events)
        return json_response(result)

    @app.get(f"{PIPE_PREFIX}/sessions/<sid>/sentinel")
    async def sentinel(sid: str) -> Response:
        pipe = pipe_of_key()
        state.sessions.get(sid, pipe.id)
        limit = arg_int("limit", 1000, lo=1, hi=100_000)
        assert limit is not None
        suspects: dict[str, None] = {}
        recent: dict[str, None] = {}
        for view in pipe.views:
            t = view.sentinel_targets(pipe.id, limit=limit)
            suspects.update(dict.fromkeys(t.get("suspects", [])))
            recent.update(dict.fromkeys(t.get("recent", [])))
        return json_response({"suspects": list(suspects)[:limit], "recent": list(recent)[:limit]})

    return app
