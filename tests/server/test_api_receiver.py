"""The receiver app through Quart's test client: sessions, roles, commands, event batches
(dedupe, validation, limits), sentinel targets and the receiver side of the auth matrix."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from service_support import (
    MGMT,
    PUSH1,
    PUSH2,
    PUSH3,
    READ1,
    config_dict,
    dir_,
    end,
    file,
    make_config,
    rows,
    snapshot_rows,
    start,
)

from fustor_fusion.receiver import create_receiver_app
from fustor_fusion.state import FusionState

S = "/api/v1/pipe/sessions"


class Client:
    def __init__(self, app: Any, remote: str = "127.0.0.1") -> None:
        self.c = app.test_client()
        self.remote = remote

    async def req(self, method: str, path: str, *, key: str | None = None, body: Any = None,
                  data: bytes | None = None, query: dict[str, Any] | None = None
                  ) -> tuple[int, Any]:
        headers = {"X-API-Key": key} if key else {}
        kw: dict[str, Any] = {}
        if body is not None:
            kw["json"] = body
        if data is not None:
            kw["data"] = data
            headers["Content-Type"] = "application/json"
        resp = await self.c.open(path, method=method, headers=headers, query_string=query,
                                 scope_base={"client": (self.remote, 40000)}, **kw)
        raw = await resp.get_data()
        return resp.status_code, (json.loads(raw) if raw else None)


@pytest.fixture
def state() -> FusionState:
    return FusionState(make_config())


@pytest.fixture
def r1(state: FusionState) -> Client:
    return Client(create_receiver_app(state, "r1"))


async def open_session(c: Client, key: str = PUSH1, agent: str = "agent-a") -> dict[str, Any]:
    code, body = await c.req("POST", S, key=key, body={
        "agent_id": agent, "host": "host-a", "source_uri": "/mnt/share",
        "capabilities": ["realtime", "snapshot", "find"], "version": "0.9.0"})
    assert code == 201, body
    return body  # type: ignore[no-any-return]


async def send(c: Client, sid: str, seq: int, events: list[dict[str, Any]],
               key: str = PUSH1) -> tuple[int, Any]:
    return await c.req("POST", f"{S}/{sid}/events", key=key, body={"seq": seq, "events": events})


async def test_session_create_answers_the_documented_parameters(r1: Client) -> None:
    body = await open_session(r1)
    assert body["role"] == "leader" and body["pipe_id"] == "pipe-1"
    assert body["session_id"].startswith("s-")
    for k in ("session_timeout_seconds", "heartbeat_interval_sec", "audit_interval_sec",
              "full_audit_interval_sec", "sentinel_interval_sec", "hot_file_threshold",
              "max_batch_events", "max_batch_bytes"):
        assert k in body, k
    assert body["session_timeout_seconds"] == 30.0 and body["hot_file_threshold"] == 0.0
    second = await open_session(r1, agent="agent-b")
    assert second["role"] == "follower"
    other_pipe = await open_session(r1, key=PUSH2, agent="agent-c")
    assert other_pipe["role"] == "leader" and other_pipe["pipe_id"] == "pipe-2"


async def test_session_create_validates_its_body(r1: Client) -> None:
    assert (await r1.req("POST", S, key=PUSH1, data=b"{nope"))[0] == 400
    assert (await r1.req("POST", S, key=PUSH1, body=[1]))[0] == 400
    code, body = await r1.req("POST", S, key=PUSH1, body={"agent_id": 5})
    assert code == 422 and "agent_id" in body["message"]
    code, body = await r1.req("POST", S, key=PUSH1, body={"agent_id": "a", "capabilities": "x"})
    assert code == 422 and "capabilities" in body["message"]


async def test_receiver_auth_matrix(state: FusionState, r1: Client) -> None:
    r2 = Client(create_receiver_app(state, "r2"))
    assert (await r1.req("POST", S, body={"agent_id": "a"}))[0] == 401
    code, body = await r1.req("POST", S, key="who-knows", body={"agent_id": "a"})
    assert code == 401 and body["error"] == "AuthError"
    code, body = await r1.req("POST", S, key=READ1, body={"agent_id": "a"})
    assert code == 403 and body["error"] == "ScopeError"
    assert (await r1.req("POST", S, key=MGMT, body={"agent_id": "a"}))[0] == 401  # not configured
    # a push key of another receiver's pipe
    code, body = await r1.req("POST", S, key=PUSH3, body={"agent_id": "a"})
    assert code == 403 and "r2" in body["message"]
    assert (await r2.req("POST", S, key=PUSH3, body={"agent_id": "a"}))[0] == 201
    # a session of pipe-1 used with pipe-2's key
    sid = (await open_session(r1))["session_id"]
    assert (await r1.req("POST", f"{S}/{sid}/heartbeat", key=PUSH2, body={}))[0] == 403
    assert (await send(r1, sid, 1, [], key=PUSH2))[0] == 403
    assert (await r1.req("GET", f"{S}/{sid}/commands", key=PUSH2, query={"wait": 0}))[0] == 403


async def test_delete_promotes_the_follower_with_a_role_command(r1: Client) -> None:
    lead = (await open_session(r1, agent="a"))["session_id"]
    fol = (await open_session(r1, agent="b"))["session_id"]
    code, body = await r1.req("POST", f"{S}/{fol}/heartbeat", key=PUSH1,
                              body={"status": {"state": "idle", "watched": 3}})
    assert (code, body) == (200, {"role": "follower"})
    assert (await r1.req("DELETE", f"{S}/{lead}", key=PUSH1))[0] == 204
    code, body = await r1.req("GET", f"{S}/{fol}/commands", key=PUSH1,
                              query={"after": 0, "wait": 0})
    assert code == 200 and body["role"] == "leader"
    assert body["commands"] == [{"seq": 1, "type": "role", "role": "leader"}]
    code, body = await r1.req("GET", f"{S}/{fol}/commands", key=PUSH1, query={"after": 1, "wait": 0})
    assert body["commands"] == []
    # the old session is gone for good
    code, body = await r1.req("POST", f"{S}/{lead}/heartbeat", key=PUSH1, body={})
    assert code == 410 and body["error"] == "SessionExpiredError"
    assert (await send(r1, lead, 1, []))[0] == 410
    assert (await r1.req("DELETE", f"{S}/{lead}", key=PUSH1))[0] == 410


async def test_commands_poll_validates_its_parameters(r1: Client) -> None:
    sid = (await open_session(r1))["session_id"]
    for q in ({"after": "x"}, {"after": -1}, {"wait": "soon"}, {"wait": 31}):
        code, body = await r1.req("GET", f"{S}/{sid}/commands", key=PUSH1, query=q)
        assert code == 400, (q, body)


async def test_events_are_applied_and_duplicates_answered_without_reapplying(
        state: FusionState, r1: Client) -> None:
    sid = (await open_session(r1))["session_id"]
    code, body = await send(r1, sid, 1, snapshot_rows(files=3))
    assert (code, body) == (200, {"seq": 1, "applied": 8, "duplicate": False})
    view = state.views["v1"]
    assert view.snapshot_done("pipe-1")
    assert view.node("/data/f2.dat")["size"] == 102  # type: ignore[index]
    code, body = await send(r1, sid, 1, rows(file("/data/late.dat", mtime=2e9)))
    assert (code, body) == (200, {"seq": 1, "applied": 0, "duplicate": True})
    assert view.node("/data/late.dat") is None
    assert state.pipes["pipe-1"].events_applied == 8 and state.pipes["pipe-1"].duplicates == 1
    # seqs need not be ordered (concurrent streams)
    assert (await send(r1, sid, 0, rows(file("/data/rt.dat", mtime=2e9))))[1]["applied"] == 1
    assert view.node("/data/rt.dat") is not None


async def test_a_bad_row_is_422_naming_it_and_nothing_is_applied(
        state: FusionState, r1: Client) -> None:
    sid = (await open_session(r1))["session_id"]
    await send(r1, sid, 1, snapshot_rows(files=2))
    batch = rows(file("/data/new1.dat", mtime=2e9), file("/data/new2.dat", mtime=2e9))
    batch.append({"op": "upsert", "path": "/data/x", "type": "file", "size": 1, "mtime": "soon",
                  "mode": 420})
    code, body = await send(r1, sid, 2, batch)
    assert code == 422 and body["index"] == 2 and "events[2].mtime" in body["message"]
    view = state.views["v1"]
    assert view.node("/data/new1.dat") is None
    code, body = await send(r1, sid, 3, rows(file("/data/y", mtime=2e9)) + [
        {"op": "delete", "path": "/data/../etc"}])
    assert code == 422 and "events[1].path" in body["message"]
    # the refused seqs were not consumed: a corrected batch with the same seq goes through
    code, body = await send(r1, sid, 2, batch[:2])
    assert body == {"seq": 2, "applied": 2, "duplicate": False}
    for bad in ({"events": []}, {"seq": "1", "events": []}, {"seq": 1, "events": {}}):
        code, body = await r1.req("POST", f"{S}/{sid}/events", key=PUSH1, body=bad)
        assert code == 422, bad


async def test_bad_json_is_400_and_oversized_batches_are_413(state: FusionState) -> None:
    d = config_dict()
    d["receivers"]["r1"]["max_batch_bytes"] = 4096
    d["receivers"]["r1"]["max_batch_events"] = 5
    st = FusionState(make_config(d))
    c = Client(create_receiver_app(st, "r1"))
    sid = (await open_session(c))["session_id"]
    code, body = await c.req("POST", f"{S}/{sid}/events", key=PUSH1, data=b'{"seq": 1, "ev')
    assert code == 400 and "JSON" in body["message"]
    code, body = await c.req("POST", f"{S}/{sid}/events", key=PUSH1, data=b"[1, 2]")
    assert code == 400
    big = rows(*[file(f"/f{i}-{'x' * 100}", mtime=2e9) for i in range(60)])
    code, body = await send(c, sid, 1, big[:40])
    assert code == 413 and body["error"] == "TooLargeError"
    code, body = await send(c, sid, 2, big[:6])
    assert code == 413 and "split" in body["message"]
    assert (await send(c, sid, 2, big[:5]))[1]["applied"] == 5


async def test_followers_may_not_start_leader_scans(state: FusionState, r1: Client) -> None:
    await open_session(r1, agent="a")
    fol = (await open_session(r1, agent="b"))["session_id"]
    for kind in ("snapshot", "audit", "full_audit", "sentinel"):
        code, body = await send(r1, fol, 1, rows(dir_("/x", mtime=2e9), start("sc", kind),
                                                 end("sc")))
        assert code == 403 and kind in body["message"] and body["index"] == 1, kind
    assert state.views["v1"].node("/x") is None
    assert not state.views["v1"].snapshot_running("pipe-1")
    # realtime rows are fine from anyone
    code, body = await send(r1, fol, 1, rows(dir_("/rt", mtime=2e9)))
    assert code == 200 and body["applied"] == 1


async def test_sentinel_targets_of_the_pipe(state: FusionState, r1: Client) -> None:
    sid = (await open_session(r1))["session_id"]
    await send(r1, sid, 1, snapshot_rows(files=1))
    await send(r1, sid, 2, rows(file("/data/hot.dat", mtime=time.time(), write="progress")))
    code, body = await r1.req("GET", f"{S}/{sid}/sentinel", key=PUSH1, query={"limit": 10})
    assert code == 200
    assert "/data/hot.dat" in body["suspects"] and "/data/hot.dat" in body["recent"]
    assert (await r1.req("GET", f"{S}/{sid}/sentinel", key=PUSH1, query={"limit": 0}))[0] == 400


async def test_unknown_endpoint_and_method_are_json_errors(r1: Client) -> None:
    code, body = await r1.req("GET", "/api/v1/pipe/nothing", key=PUSH1)
    assert code == 404 and body["error"] == "NotFoundError"
    code, body = await r1.req("GET", S, key=PUSH1)
    assert code == 405 and "message" in body
    assert (await r1.req("GET", "/api/v1/health"))[1]["status"] == "ok"


async def test_a_session_that_ends_abandons_its_own_scans_only(state: FusionState,
                                                              r1: Client) -> None:
    view = state.views["v1"]
    lead = (await open_session(r1))["session_id"]
    fol = (await open_session(r1, agent="agent-b"))["session_id"]
    late = (await open_session(r1, agent="agent-c"))["session_id"]
    assert (await send(r1, lead, 1, rows(start("snap", "snapshot"))))[0] == 200
    assert (await send(r1, fol, 1, rows(start("fb", "find", "/d"))))[0] == 200
    assert (await send(r1, late, 1, rows(start("fc", "find", "/e"))))[0] == 200
    running = lambda: sorted(s["scan"] for s in view.scan_progress("pipe-1")["running"])  # noqa: E731
    assert running() == ["fb", "fc", "snap"]
    # a follower that goes away: its find will never end
    assert (await r1.req("DELETE", f"{S}/{late}", key=PUSH1))[0] == 204
    assert running() == ["fb", "snap"]
    # the leader goes: its scans end, the follower's find goes on under the new leader
    assert (await r1.req("DELETE", f"{S}/{lead}", key=PUSH1))[0] == 204
    assert running() == ["fb"]
    assert (await send(r1, fol, 2, rows(dir_("/d", scan="fb"), end("fb"))))[0] == 200
    assert running() == [] and view.scan_progress("pipe-1")["finished"]["find"]["ok"] is True
