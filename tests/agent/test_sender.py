"""The sender against httpx.MockTransport: retries, seq stability, 410, slow 401, 413 split."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from fustor.agent import rows
from fustor.agent.sender import Batcher, FusionClient, Session, SessionInfo
from fustor.backoff import Backoff
from fustor.config import SenderConfig
from fustor.errors import AuthError, SessionExpiredError, UnavailableError

ROW = rows.delete("/x")


class Fake:
    """Answers each request with the next scripted reply; records requests and times."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[float, str, str, dict[str, Any] | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((trio.current_time(), request.method, request.url.path, body))
        assert request.headers["X-API-Key"] == "k"
        reply = self.replies.pop(0) if self.replies else 200
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, tuple):
            return httpx.Response(reply[0], json=reply[1])
        seq = body.get("seq") if isinstance(body, dict) else None
        return httpx.Response(reply, json={"seq": seq, "applied": 1, "duplicate": False,
                                           "error": "X", "message": f"status {reply}"})


def session(fake: Fake, **info: Any) -> Session:
    client = FusionClient(SenderConfig(id="s", uri="http://fusion.test", key="k"),
                          transport=httpx.MockTransport(fake))
    return Session(client, SessionInfo(session_id="s-1", pipe_id="p", role="leader", **info))


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(1.0, 8.0, jitter=0.0)
    assert [b.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.failing
    b.reset()
    assert not b.failing and b.next() == 1.0
    j = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 1.0)
    assert j.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


async def test_5xx_and_transport_errors_retry_same_batch(autojump_clock: trio.testing.MockClock) -> None:
    fake = Fake(503, httpx.ConnectError("refused"), 500, 200)
    s = session(fake)
    await s.send([ROW, ROW])
    assert len(fake.calls) == 4
    bodies = [c[3] for c in fake.calls]
    assert all(b == {"seq": 1, "events": [{"op": "delete", "path": "/x"}] * 2} for b in bodies)
    gaps = [b[0] - a[0] for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert all(g > 0.4 for g in gaps) and gaps[2] > gaps[0]   # backoff, growing
    await s.send([ROW])
    assert fake.calls[-1][3]["seq"] == 2


async def test_410_raises_session_expired() -> None:
    s = session(Fake(410))
    with pytest.raises(SessionExpiredError):
        await s.send([ROW])


async def test_401_is_retried_slowly(autojump_clock: trio.testing.MockClock) -> None:
    fake = Fake(401, 403, 200)
    s = session(fake)
    await s.send([ROW])
    t = [c[0] for c in fake.calls]
    assert len(t) == 3 and t[1] - t[0] >= 9.0 and t[2] - t[1] >= 18.0


async def test_413_splits_the_batch() -> None:
    fake = Fake(413, 200, 200)
    s = session(fake)
    await s.send([rows.delete(f"/{i}") for i in range(4)])
    sizes = [len(c[3]["events"]) for c in fake.calls]
    assert sizes == [4, 2, 2]
    assert [c[3]["seq"] for c in fake.calls] == [1, 2, 3]


async def test_422_is_not_retried() -> None:
    fake = Fake((422, {"error": "InvalidBatchError", "message": "events[0].path: bad"}), 200)
    s = session(fake)
    await s.send([ROW])
    assert len(fake.calls) == 1
    await s.send([ROW])
    assert fake.calls[-1][3]["seq"] == 2


async def test_batches_respect_event_and_byte_limits() -> None:
    fake = Fake()
    s = session(fake, max_batch_events=3, max_batch_bytes=2048)
    await s.send([rows.delete(f"/{i}") for i in range(7)])
    assert [len(c[3]["events"]) for c in fake.calls] == [3, 3, 1]
    fake.calls.clear()
    big = [rows.delete("/" + "a" * 600 + str(i)) for i in range(6)]
    await s.send(big)
    assert all(len(json.dumps(c[3])) <= 2048 for c in fake.calls) and len(fake.calls) >= 2
    b = Batcher(s, batch_size=2)
    fake.calls.clear()
    await b([ROW] * 3)
    assert len(fake.calls) == 1
    await b.flush()
    assert [len(c[3]["events"]) for c in fake.calls] == [2, 1]


async def test_client_maps_errors() -> None:
    client = FusionClient(SenderConfig(id="s", uri="http://fusion.test", key="k"),
                          transport=httpx.MockTransport(Fake(
                              (201, {"session_id": "s-9", "pipe_id": "p", "role": "follower",
                                     "heartbeat_interval_sec": 2, "full_audit_interval_sec": 99}),
                              401, httpx.ReadTimeout("slow"), 502)))
    info = await client.open_session("agent", "/src")
    assert (info.session_id, info.role, info.heartbeat_interval, info.full_audit_interval) == \
        ("s-9", "follower", 2.0, 99.0)
    with pytest.raises(AuthError):
        await client.heartbeat("s-9", {})
    with pytest.raises(UnavailableError):
        await client.heartbeat("s-9", {})
    with pytest.raises(UnavailableError):
        await client.poll_commands("s-9", 0, wait=1)
    await client.aclose()
