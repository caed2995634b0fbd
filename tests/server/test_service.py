"""serve_fusion in process on port 0, driven over real HTTP with httpx: the agent protocol end
to end, realtime find through an open long-poll, leader timeout, reload and shutdown."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
import trio.testing
from fusion_rows import T0
from service_support import (
    PUSH1,
    PUSH2,
    PUSH3,
    READ1,
    config_dict,
    end,
    file,
    make_config,
    rows,
    snapshot_rows,
    start,
)

from fustor.config import FusionConfig
from fustor_fusion.service import FusionHandle, serve_fusion

S = "/api/v1/pipe/sessions"


class Agent:
    """A minimal protocol client, enough to drive the receiver like an agent does."""

    def __init__(self, http: httpx.AsyncClient, url: str, key: str, agent_id: str) -> None:
        self.http, self.url, self.key, self.agent_id = http, url, key, agent_id
        self.sid = ""
        self.seq = 0

    async def req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.http.request(method, self.url + path,
                                       headers={"X-API-Key": self.key}, **kw)

    async def open(self) -> dict[str, Any]:
        r = await self.req("POST", S, json={"agent_id": self.agent_id, "host": "h",
                                            "capabilities": ["find"]})
        assert r.status_code == 201, r.text
        self.sid = r.json()["session_id"]
        return r.json()  # type: ignore[no-any-return]

    async def send(self, events: list[dict[str, Any]]) -> httpx.Response:
        self.seq += 1
        return await self.req("POST", f"{S}/{self.sid}/events",
                              json={"seq": self.seq, "events": events})

    async def poll(self, after: int = 0, wait: float = 25) -> httpx.Response:
        return await self.req("GET", f"{S}/{self.sid}/commands",
                              params={"after": after, "wait": wait}, timeout=wait + 10)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # No keep-alive: hypercorn waits its graceful timeout (2 s) for idle kept-alive connections
    # on shutdown, which would only slow these tests down.
    async with httpx.AsyncClient(
            timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield client


async def start_fusion(nursery: trio.Nursery, config: FusionConfig, **kw: Any) -> FusionHandle:
    handle: FusionHandle = await nursery.start(lambda task_status: serve_fusion(
        config, task_status=task_status, **kw))
    return handle


async def wait_until(pred: Any) -> None:
    """Poll a condition on state we do not own (no event to wait on); the caller's
    test timeout and the 10 s deadline bound it."""
    with trio.fail_after(10):
        while not pred():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_protocol_flow_and_realtime_find_through_an_open_poll(
        http: httpx.AsyncClient) -> None:
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config())
        assert h.api_url.startswith("http://127.0.0.1:") and set(h.receiver_urls) == {"r1", "r2"}
        api = h.api_url + "/api/v1/views/v1"
        key = {"X-API-Key": READ1}
        r = await http.get(api + "/tree", headers=key)
        assert r.status_code == 503 and "Retry-After" in r.headers
        a = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-a")
        b = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-b")
        c = Agent(http, h.receiver_urls["r1"], PUSH2, "agent-c")
        assert (await a.open())["role"] == "leader"
        assert (await b.open())["role"] == "follower"
        await c.open()
        r = await a.send(snapshot_rows("s1", files=3))
        assert r.json() == {"seq": 1, "applied": 8, "duplicate": False}
        await c.send(snapshot_rows("s2", files=1))
        r = await http.get(api + "/tree", headers=key, params={"path": "/data"})
        assert r.status_code == 200 and len(r.json()["entry"]["children"]) == 3

        # the leader's command poll is open when the find job is created
        polled: list[httpx.Response] = []

        async def poll_a() -> None:
            polled.append(await a.poll(after=0, wait=25))
        nursery.start_soon(poll_a)
        await wait_until(lambda: h.state.sessions.by_id[a.sid].polls == 1)
        r = await http.get(api + "/tree", headers=key,
                           params={"path": "/data/new", "force_real_time": "True"})
        assert r.status_code == 200 and r.json()["find_pending"] is True
        assert r.json()["entry"] is None
        job_id = r.json()["job_id"]
        await wait_until(lambda: bool(polled))
        cmds = polled[0].json()["commands"]
        assert cmds == [{"seq": 1, "type": "find", "job_id": job_id, "path": "/data/new",
                         "recursive": True}]
        # the leader runs it; the follower got nothing
        assert (await b.poll(wait=0)).json()["commands"] == []
        mgmt = h.api_url + "/api/v1/management/jobs/" + job_id
        job = (await http.get(mgmt)).json()
        assert job["state"] == "pending" and set(job["agents"]) == {"pipe-1/agent-a", "pipe-2/agent-c"}
        await a.send(rows(start("f1", "find", "/data/new", job_id=job_id),
                          file("/data/new", mtime=T0 + 50, scan="f1")))
        job = (await http.get(mgmt)).json()
        assert job["agents"]["pipe-1/agent-a"]["state"] == "running"
        await a.send(rows(end("f1", entries=1)))
        c_cmds = (await c.poll(wait=0)).json()["commands"]
        assert c_cmds[0]["job_id"] == job_id
        await c.send(rows(start("f2", "find", "/data/new", job_id=job_id), end("f2", entries=0)))
        job = (await http.get(mgmt)).json()
        assert job["state"] == "done" and job["agents"]["pipe-1/agent-a"]["entries"] == 1
        r = await http.get(api + "/metadata", headers=key, params={"path": "/data/new"})
        assert r.status_code == 200 and r.json()["entry"]["blind_spot"] == "added"
        assert [j["job_id"] for j in (await http.get(h.api_url + "/api/v1/management/jobs")).json()["jobs"]] == [job_id]

        # graceful leave promotes the follower, which learns it from its poll
        assert (await a.req("DELETE", f"{S}/{a.sid}")).status_code == 204
        r = await b.poll(wait=0)
        assert r.json()["role"] == "leader" and r.json()["commands"][0]["type"] == "role"
        assert (await a.req("POST", f"{S}/{a.sid}/heartbeat", json={})).status_code == 410
        st = h.status()
        assert st["sessions"] == 2 and st["pipes"]["pipe-1"]["leader"] == "agent-b"
        assert st["api_url"] == h.api_url
        h.stop()


async def test_leader_timeout_promotes_a_polling_follower(http: httpx.AsyncClient) -> None:
    d = config_dict()
    d["pipes"]["pipe-1"]["session_timeout_seconds"] = 0.3
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config(d), tick_sec=0.05)
        a = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-a")
        b = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-b")
        await a.open()
        await b.open()
        # b's open poll keeps b alive; a says nothing and times out; b is told at once
        r = await b.poll(after=0, wait=20)
        assert r.status_code == 200
        assert r.json() == {"role": "leader",
                            "commands": [{"seq": 1, "type": "role", "role": "leader"}]}
        assert (await a.send([])).status_code == 410
        assert h.state.sessions.leader_of("pipe-1").agent_id == "agent-b"  # type: ignore[union-attr]
        h.stop()


async def test_reload_adds_and_removes_receivers_views_and_pipes(http: httpx.AsyncClient) -> None:
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config())
        a = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-a")
        c = Agent(http, h.receiver_urls["r1"], PUSH2, "agent-c")
        await a.open()
        await c.open()
        await a.send(snapshot_rows("s1", files=2))
        await c.send(snapshot_rows("s2", files=1))
        old_r2 = h.receiver_urls["r2"]
        d = config_dict()
        del d["receivers"]["r2"]
        del d["pipes"]["pipe-3"]
        del d["views"]["v2"]
        d["receivers"]["r3"] = {"port": 0, "api_keys": [{"key": "push-4", "pipe_id": "pipe-4"}]}
        d["views"]["v3"] = {"api_keys": ["read-3"]}
        d["pipes"]["pipe-4"] = {"receiver": "r3", "views": ["v3"]}
        await h.reload(make_config(d))
        assert set(h.receiver_urls) == {"r1", "r3"}
        with pytest.raises(httpx.TransportError):
            await http.get(old_r2 + "/api/v1/health")
        # the unchanged view kept its tree and its agents
        r = await http.get(h.api_url + "/api/v1/views/v1/tree", headers={"X-API-Key": READ1},
                           params={"path": "/data"})
        assert r.status_code == 200 and len(r.json()["entry"]["children"]) == 2
        assert (await a.send([])).status_code == 200
        # the new pipe works on the new receiver
        n = Agent(http, h.receiver_urls["r3"], "push-4", "agent-n")
        assert (await n.open())["role"] == "leader"
        await n.send(snapshot_rows("s3", files=4))
        r = await http.get(h.api_url + "/api/v1/views/v3/tree",
                           headers={"X-API-Key": "read-3"}, params={"path": "/data"})
        assert r.status_code == 200 and len(r.json()["entry"]["children"]) == 4
        assert (await http.get(h.api_url + "/api/v1/views/v2/tree",
                               headers={"X-API-Key": "read-2"})).status_code == 401
        bad = Agent(http, h.receiver_urls["r1"], PUSH3, "x")
        assert (await bad.req("POST", S, json={"agent_id": "x"})).status_code == 401
        # routing pipe-2 to v3 as well: its agents reconnect so its leader snapshots again
        d["pipes"]["pipe-2"]["views"] = ["v1", "v3"]
        await h.reload(make_config(d))
        assert (await c.send([])).status_code == 410
        assert (await a.send([])).status_code == 200
        h.stop()


async def test_stop_ends_serving_even_with_an_open_poll(http: httpx.AsyncClient) -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            h = await start_fusion(nursery, make_config())
            a = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-a")
            await a.open()

            async def poll() -> None:
                with pytest.raises(httpx.HTTPError):
                    await a.poll(wait=25)
            nursery.start_soon(poll)
            await wait_until(lambda: h.state.sessions.by_id[a.sid].polls == 1)
            h.stop()
    with pytest.raises(httpx.TransportError):
        await http.get(h.api_url + "/api/v1/health")


async def test_a_busy_port_is_a_config_error() -> None:
    from fustor.errors import ConfigError
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config())
        port = int(h.api_url.rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match="cannot listen"):
            await serve_fusion(make_config(port=port))      # fails before serving anything
        h.stop()


async def test_names_that_are_not_utf8_survive_the_round_trip(http: httpx.AsyncClient) -> None:
    raw = b"/data/caf\xe9 \xff.dat"                 # Latin-1 bytes: not valid UTF-8
    name = os.fsdecode(raw)
    utf8 = "/data/café ü.dat"
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config())
        for key, agent in ((PUSH1, "a"), (PUSH2, "c")):
            ag = Agent(http, h.receiver_urls["r1"], key, agent)
            await ag.open()
            await ag.send(snapshot_rows("s", files=1))
        ag.seq += 1
        body = json.dumps({"seq": ag.seq, "events": rows(file(name, mtime=T0 + 9, size=5),
                                                         file(utf8, mtime=T0 + 9, size=6))})
        r = await ag.req("POST", f"{S}/{ag.sid}/events", content=body.encode("ascii"))
        assert r.json()["applied"] == 2
        api = h.api_url + "/api/v1/views/v1"
        key = {"X-API-Key": READ1}
        r = await http.get(api + "/tree", headers=key, params={"path": "/data"})
        names = {ch["name"] for ch in r.json()["entry"]["children"]}
        assert os.fsdecode(b"caf\xe9 \xff.dat") in names and "café ü.dat" in names
        assert "\\udce9" in r.text                 # carried as an escape, byte-exact
        for p, size in ((raw, 5), (os.fsencode(utf8), 6)):
            r = await http.get(f"{api}/metadata?path={quote(p, safe='/')}", headers=key)
            assert r.status_code == 200, r.text
            assert r.json()["entry"]["size"] == size
            assert os.fsencode(r.json()["entry"]["path"]) == p
        h.stop()


async def _exchange(stream: trio.SocketStream, data: bytes) -> bytes:
    """Send `data` and read one whole HTTP response (headers + Content-Length body)."""
    await stream.send_all(data)
    buf = b""
    while True:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                           if h.lower().startswith(b"content-length:")), 0)
            if len(rest) >= length:
                return head
        chunk = await stream.receive_some(65536)
        assert chunk, "connection closed"
        buf += chunk


async def test_refusals_keep_a_kept_alive_connection_usable() -> None:
    # An agent retries on one keep-alive connection, and its body may arrive after the
    # headers; a 4xx is answered without reading it. The connection must serve the next
    # request (it used to hang: quart-trio stopped receiving and the body was never read).
    body = json.dumps({"agent_id": "x" * 2000}).encode()
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config())
        for base, path in ((h.receiver_urls["r1"], S), (h.api_url, "/api/v1/nowhere")):
            host, port = base.removeprefix("http://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                with trio.fail_after(5):
                    for i in range(4):
                        key = "X-API-Key: nope\r\n" if i % 2 else ""
                        await stream.send_all((
                            f"POST {path} HTTP/1.1\r\nHost: x\r\n{key}Content-Type: "
                            f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                        ).encode())
                        await trio.sleep(0.005)
                        head = await _exchange(stream, body)
                        assert head.split(b" ")[1] in (b"401", b"404"), head
                    head = await _exchange(stream, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert head.split(b" ")[1] == b"200"
        h.stop()


async def test_a_slow_upload_keeps_its_session_alive(http: httpx.AsyncClient) -> None:
    # PROTOCOL.md: any request on a session keeps it alive, an events upload too, however
    # long its body takes to arrive (here longer than the session timeout).
    d = config_dict()
    d["pipes"]["pipe-1"]["session_timeout_seconds"] = 0.3
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config(d), tick_sec=0.05)
        a = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-a")
        await a.open()
        body = json.dumps({"seq": 1, "events": snapshot_rows("s1", files=2)}).encode()

        async def slowly() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 64):
                yield body[i:i + 64]
                await trio.sleep(0.05)           # ~0.5 s in all

        r = await http.post(f"{a.url}{S}/{a.sid}/events", content=slowly(),
                            headers={"X-API-Key": PUSH1, "Content-Type": "application/json",
                                     "Content-Length": str(len(body))})
        assert r.status_code == 200, r.text
        assert r.json()["applied"] == 7
        assert a.sid in h.state.sessions.by_id
        h.stop()


async def test_a_stalled_upload_does_not_keep_its_session_alive(http: httpx.AsyncClient) -> None:
    d = config_dict()
    d["pipes"]["pipe-1"]["session_timeout_seconds"] = 0.3
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config(d), tick_sec=0.05)
        a = Agent(http, h.receiver_urls["r1"], PUSH1, "agent-a")
        await a.open()
        body = json.dumps({"seq": 1, "events": snapshot_rows("s1", files=2)}).encode()
        stalled = trio.Event()

        async def stall() -> AsyncIterator[bytes]:
            yield body[:100]
            await stalled.wait()                 # a frozen agent: no more bytes
            yield body[100:]

        async def upload() -> None:
            with trio.move_on_after(10):
                await http.post(f"{a.url}{S}/{a.sid}/events", content=stall(),
                                headers={"X-API-Key": PUSH1, "Content-Length": str(len(body))})
        nursery.start_soon(upload)
        await wait_until(lambda: a.sid not in h.state.sessions.by_id)   # expired in time
        stalled.set()
        h.stop()


async def test_gc_thresholds_are_raised_while_serving_and_restored_after() -> None:
    import gc

    from fustor_fusion.service import GC_THRESHOLDS
    before = gc.get_threshold()
    async with trio.open_nursery() as nursery:
        h = await start_fusion(nursery, make_config())
        assert gc.get_threshold() == GC_THRESHOLDS
        h.stop()
    assert gc.get_threshold() == before
