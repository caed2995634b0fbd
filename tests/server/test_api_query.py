"""The query + management app through Quart's test client: every endpoint and parameter,
readiness (503 / allow_partial / stale), force_real_time jobs and the auth scope matrix."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
from fusion_rows import T0, dir_, done, end, file, scan, start
from service_support import MGMT, PUSH1, READ1, READ2, config_dict, make_config

from fustor_fusion.app import create_app
from fustor_fusion.state import FusionState

V1 = "/api/v1/views/v1"
M = "/api/v1/management"


class Client:
    def __init__(self, state: FusionState, remote: str = "127.0.0.1") -> None:
        self.c = create_app(state).test_client()
        self.remote = remote

    async def get(self, url: str, /, key: str | None = READ1, remote: str | None = None,
                  **query: Any) -> tuple[int, Any, Any]:
        headers = {"X-API-Key": key} if key else {}
        resp = await self.c.get(url, headers=headers, query_string=query or None,
                                scope_base={"client": (remote or self.remote, 40000)})
        raw = await resp.get_data()
        return resp.status_code, json.loads(raw), resp.headers


def snapshot(state: FusionState, pipe: str, view: str = "v1", *, files: int = 3,
             extra: str = "") -> None:
    rows = [dir_("/data"), dir_("/data/sub")]
    rows += [file(f"/data/f{i}.dat", mtime=T0 + i, size=10 * i) for i in range(files)]
    rows += [file(f"/data/sub/{pipe}{extra}.bin", size=7)]
    state.views[view].apply(pipe, scan(f"snap-{pipe}", "snapshot", rows,
                                       dirs=["/data/sub", "/data", "/"]))


@pytest.fixture
def state() -> FusionState:
    return FusionState(make_config())


@pytest.fixture
def ready(state: FusionState) -> FusionState:
    for pipe in ("pipe-1", "pipe-2"):
        state.sessions.create(pipe, agent_id=f"agent-{pipe}", host="h")
        snapshot(state, pipe)
    return state


async def test_readiness_503_then_partial_then_ready_then_stale(state: FusionState) -> None:
    c = Client(state)
    code, body, headers = await c.get(f"{V1}/tree")
    assert code == 503 and headers["Retry-After"].isdigit()
    assert body["error"] == "NotReadyError"
    assert body["pipes"] == {
        "pipe-1": {"state": "no_leader", "reason": "no agent has connected for this pipe yet"},
        "pipe-2": {"state": "no_leader", "reason": "no agent has connected for this pipe yet"}}
    lead = state.sessions.create("pipe-1", agent_id="a")
    state.views["v1"].apply("pipe-1", [start("snap", "snapshot"), dir_("/data", scan="snap")])
    code, body, _ = await c.get(f"{V1}/metadata", path="/")
    assert code == 503 and body["pipes"]["pipe-1"]["state"] == "snapshot"
    assert (await c.get(f"{V1}/search", pattern="*"))[0] == 503
    code, body, _ = await c.get(f"{V1}/tree", allow_partial="true")
    assert code == 200 and body["meta"]["partial"] is True
    assert body["meta"]["pipes"]["pipe-1"] == {"state": "snapshot", "leader": "a", "stale": False}
    assert body["meta"]["pipes"]["pipe-2"]["state"] == "no_leader"
    assert [ch["name"] for ch in body["entry"]["children"]] == ["data"]
    state.views["v1"].apply("pipe-1", [done("snap", "/data"), done("snap", "/"), end("snap")])
    state.sessions.create("pipe-2", agent_id="b")
    snapshot(state, "pipe-2")
    code, body, _ = await c.get(f"{V1}/tree")
    assert code == 200 and body["meta"]["partial"] is False
    assert set(body["meta"]["pipes"]) == {"pipe-1", "pipe-2"}
    assert isinstance(body["meta"]["logical_clock"], float)
    # agents gone: the last tree stays served, marked stale
    state.sessions.end(lead.id)
    code, body, _ = await c.get(f"{V1}/tree")
    assert code == 200 and body["meta"]["pipes"]["pipe-1"] == {
        "state": "stale", "leader": None, "stale": True}
    code, body, _ = await c.get(f"{V1}/stats")
    assert body["pipes"]["pipe-1"]["stale"] is True and body["pipes"]["pipe-2"]["state"] == "ready"


async def test_tree_parameters(ready: FusionState) -> None:
    c = Client(ready)
    code, body, _ = await c.get(f"{V1}/tree", path="/data")
    assert code == 200 and body["view"] == "v1" and body["path"] == "/data"
    entry = body["entry"]
    assert entry["type"] == "dir" and entry["sources"] == ["pipe-1", "pipe-2"]
    names = [ch["name"] for ch in entry["children"]]
    assert names == ["f0.dat", "f1.dat", "f2.dat", "sub"]
    sub = entry["children"][3]
    assert [ch["name"] for ch in sub["children"]] == ["pipe-1.bin", "pipe-2.bin"]
    # lenient normalisation of user paths
    assert (await c.get(f"{V1}/tree", path="//data/./"))[1]["path"] == "/data"
    code, body, _ = await c.get(f"{V1}/tree", path="/data", recursive="False")
    sub = [ch for ch in body["entry"]["children"] if ch["name"] == "sub"][0]
    assert "children" not in sub or not sub["children"]
    code, body, _ = await c.get(f"{V1}/tree", path="/", max_depth="1")
    assert code == 200
    data = body["entry"]["children"][0]
    assert data["name"] == "data" and not data.get("children")
    code, body, _ = await c.get(f"{V1}/tree", path="/data", only_path="true")
    assert set(body["entry"]["children"][0]) <= {"name", "path", "type", "children"}
    code, body, _ = await c.get(f"{V1}/tree", path="/data", recursive="false", limit="2")
    assert [ch["name"] for ch in body["entry"]["children"]] == ["f0.dat", "f1.dat"]
    cursor = body["next_cursor"]
    assert isinstance(cursor, str)
    code, body, _ = await c.get(f"{V1}/tree", path="/data", recursive="false", limit="2",
                                cursor=cursor)
    assert [ch["name"] for ch in body["entry"]["children"]] == ["f2.dat", "sub"]
    assert (await c.get(f"{V1}/tree", path="/nope"))[0] == 404


@pytest.mark.parametrize("query,word", [
    ({"path": "/data/../etc"}, "path"),
    ({"path": "/a\x00b"}, "path"),
    ({"recursive": "maybe"}, "recursive"),
    ({"only_path": "2"}, "only_path"),
    ({"allow_partial": "x"}, "allow_partial"),
    ({"force_real_time": "yes please"}, "force_real_time"),
    ({"max_depth": "deep"}, "max_depth"),
    ({"max_depth": "-1"}, "max_depth"),
    ({"limit": "1.5"}, "limit"),
])
async def test_bad_tree_parameters_are_400(ready: FusionState, query: dict[str, str],
                                           word: str) -> None:
    code, body, _ = await Client(ready).get(f"{V1}/tree", **query)
    assert code == 400 and body["message"].startswith(word), body
    assert ready.jobs.jobs == {}


async def test_metadata_search_and_status_endpoints(ready: FusionState) -> None:
    c = Client(ready)
    code, body, _ = await c.get(f"{V1}/metadata", path="/data/f2.dat")
    assert code == 200 and body["entry"]["size"] == 20 and "meta" in body
    assert "children" not in body["entry"]
    assert (await c.get(f"{V1}/metadata", path="/data/none"))[0] == 404
    code, body, _ = await c.get(f"{V1}/search", pattern="*.bin")
    assert code == 200 and sorted(m["path"] for m in body["matches"]) == [
        "/data/sub/pipe-1.bin", "/data/sub/pipe-2.bin"]
    assert body["truncated"] is False and "meta" in body
    code, body, _ = await c.get(f"{V1}/search", pattern="*.dat", limit="2")
    assert len(body["matches"]) == 2 and body["truncated"] is True
    code, body, _ = await c.get(f"{V1}/search", pattern="sub/*", path="/data")
    assert len(body["matches"]) == 2
    assert (await c.get(f"{V1}/search"))[0] == 400
    assert (await c.get(f"{V1}/search", pattern="*", limit="0"))[0] == 400
    code, body, _ = await c.get(f"{V1}/stats")
    assert code == 200 and body["files"] == 5 and body["directories"] == 2
    p1 = body["pipes"]["pipe-1"]
    for k in ("state", "leader", "sessions", "events_applied", "ingest_lag_sec", "stale",
              "snapshot", "audits"):
        assert k in p1, k
    assert p1["state"] == "ready" and p1["leader"] == "agent-pipe-1" and p1["sessions"] == 1
    code, body, _ = await c.get(f"{V1}/blind-spots")
    assert code == 200 and body["additions"] == [] and body["deletions"] == []
    code, body, _ = await c.get(f"{V1}/suspects")
    assert code == 200 and body["suspects"] == []
    code, body, _ = await c.get(f"{V1}/sessions")
    assert code == 200 and sorted(s["agent_id"] for s in body["sessions"]) == [
        "agent-pipe-1", "agent-pipe-2"]
    assert body["sessions"][0]["role"] == "leader"


async def test_view_auth_matrix(ready: FusionState) -> None:
    c = Client(ready)
    code, body, _ = await c.get(f"{V1}/tree", key=None)
    assert code == 401 and body["error"] == "AuthError"
    assert (await c.get(f"{V1}/tree", key="nope"))[0] == 401
    code, body, _ = await c.get(f"{V1}/tree", key=READ2)
    assert code == 403 and "v2" in body["message"]
    code, body, _ = await c.get(f"{V1}/stats", key=PUSH1)
    assert code == 403 and "receiver" in body["message"]
    assert (await c.get("/api/v1/views/nope/tree"))[0] == 404
    assert (await c.get(f"{V1}/tree", key=None, remote="10.1.2.3"))[0] == 401
    assert (await c.get("/api/v1/health", key=None, remote="10.1.2.3"))[1] == {"status": "ok"}


async def test_a_view_without_keys_is_for_loopback_clients_only() -> None:
    d = config_dict()
    d["views"]["v1"]["api_keys"] = []
    st = FusionState(make_config(d))
    for pipe in ("pipe-1", "pipe-2"):
        st.sessions.create(pipe, agent_id="a")
        snapshot(st, pipe)
    c = Client(st)
    assert (await c.get(f"{V1}/tree", key=None))[0] == 200
    assert (await c.get(f"{V1}/tree", key=None, remote="::1"))[0] == 200
    assert (await c.get(f"{V1}/tree", key=None, remote="192.0.2.7"))[0] == 403
    assert (await c.get(f"{V1}/tree", key=READ2))[0] == 403


async def test_management_loopback_without_keys_and_keys_when_configured(
        ready: FusionState) -> None:
    c = Client(ready)
    for ep in ("jobs", "views", "pipes", "sessions"):
        code, body, _ = await c.get(f"{M}/{ep}", key=None)
        assert code == 200, ep
        assert (await c.get(f"{M}/{ep}", key=None, remote="192.0.2.7"))[0] == 403
    assert (await c.get(f"{M}/jobs", key=READ1))[0] == 403
    code, body, _ = await c.get(f"{M}/pipes", key=None)
    assert [p["id"] for p in body["pipes"]] == ["pipe-1", "pipe-2", "pipe-3"]
    assert body["pipes"][0]["leader"] == "agent-pipe-1"
    code, body, _ = await c.get(f"{M}/views", key=None)
    assert {v["id"]: v["ready"] for v in body["views"]} == {"v1": True, "v2": False}
    code, body, _ = await c.get(f"{M}/sessions", key=None)
    assert len(body["sessions"]) == 2
    st = FusionState(make_config(management={"api_keys": [MGMT]}))
    c = Client(st, remote="192.0.2.7")
    assert (await c.get(f"{M}/jobs", key=None))[0] == 401
    assert (await c.get(f"{M}/jobs", key="nope"))[0] == 401
    assert (await c.get(f"{M}/jobs", key=READ1))[0] == 403
    assert (await c.get(f"{M}/jobs", key=PUSH1))[0] == 403
    assert (await c.get(f"{M}/jobs", key=MGMT))[0] == 200
    assert (await c.get(f"{V1}/tree", key=MGMT))[0] == 403


async def test_force_real_time_creates_a_shared_job_and_queues_find_commands(
        state: FusionState) -> None:
    c = Client(state)
    lead = state.sessions.create("pipe-1", agent_id="a")
    fol = state.sessions.create("pipe-1", agent_id="f")
    # not ready and the path is unknown: still 200 with a job (the guide's way out of 503)
    code, body, _ = await c.get(f"{V1}/tree", path="/target/dir", force_real_time="True")
    assert code == 200, body
    assert body["find_pending"] is True and body["entry"] is None
    assert body["job_id"].startswith("j-") and body["meta"]["partial"] is True
    job_id = body["job_id"]
    assert lead.pending(0) == [{"seq": 1, "type": "find", "job_id": job_id,
                                "path": "/target/dir", "recursive": True}]
    assert fol.pending(0) == []
    code, body, _ = await c.get(f"{V1}/tree", path="/target/dir/", force_real_time="true")
    assert body["job_id"] == job_id and len(lead.pending(0)) == 1
    code, body, _ = await c.get(f"{M}/jobs/{job_id}", key=None)
    assert code == 200 and body["state"] == "pending" and body["view"] == "v1"
    assert body["agents"]["pipe-1/a"]["state"] == "pending"
    assert body["agents"]["pipe-2/-"]["state"] == "skipped"
    code, body, _ = await c.get(f"{M}/jobs", key=None)
    assert [j["job_id"] for j in body["jobs"]] == [job_id]
    assert (await c.get(f"{M}/jobs/j-nope", key=None))[0] == 404
    code, body, _ = await c.get(f"{V1}/jobs/{job_id}")
    assert code == 200 and body["job_id"] == job_id
    assert (await c.get(f"/api/v1/views/v2/jobs/{job_id}", key=READ2))[0] == 404


async def test_unexpected_errors_are_500_json(ready: FusionState,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> None:
        raise RuntimeError("kaput")
    monkeypatch.setattr(ready.views["v1"], "stats", boom)
    code, body, _ = await Client(ready).get(f"{V1}/stats")
    assert code == 500 and body["error"] == "InternalError"


async def test_a_failed_first_snapshot_keeps_the_view_not_ready(state: FusionState) -> None:
    c = Client(state)
    state.sessions.create("pipe-1", agent_id="a")
    state.sessions.create("pipe-2", agent_id="b")
    snapshot(state, "pipe-2")
    state.views["v1"].apply("pipe-1", [start("snap", "snapshot"),
                                       end("snap", ok=False, error="root_missing")])
    code, body, headers = await c.get(f"{V1}/tree")
    assert code == 503 and headers["Retry-After"].isdigit()
    assert body["pipes"] == {"pipe-1": {
        "state": "snapshot",
        "reason": "the first snapshot failed (root_missing); waiting for the leader's retry"}}


async def test_force_real_time_with_a_bad_request_creates_no_job(ready: FusionState) -> None:
    c = Client(ready)
    for path in ("/data", "/not/yet/known"):
        code, body, _ = await c.get(f"{V1}/tree", path=path, force_real_time="true", cursor="a")
        assert code == 400 and "cursor" in body["message"]
    assert ready.jobs.jobs == {}
    data = config_dict()
    data["views"]["v1"]["driver_params"]["max_tree_items"] = 3
    small = FusionState(make_config(data))
    for pipe in ("pipe-1", "pipe-2"):
        small.sessions.create(pipe, agent_id=f"agent-{pipe}", host="h")
        snapshot(small, pipe)
    code, body, _ = await Client(small).get(f"{V1}/tree", path="/data", force_real_time="true")
    assert code == 400 and "max_tree_items" in body["message"]
    assert small.jobs.jobs == {}
    for st in (ready, small):
        for pipe in ("pipe-1", "pipe-2"):
            assert st.sessions.leader_of(pipe).commands == deque()  # type: ignore[union-attr]


async def test_a_running_job_shows_the_entries_scanned_so_far(state: FusionState) -> None:
    c = Client(state)
    lead = state.sessions.create("pipe-1", agent_id="a")
    job_id = (await c.get(f"{V1}/tree", path="/t", force_real_time="true"))[1]["job_id"]
    state.views["v1"].apply("pipe-1", [start("f1", "find", "/t", job_id=job_id),
                                       dir_("/t", scan="f1"), file("/t/a", scan="f1"),
                                       file("/t/b", scan="f1")])
    state.jobs.scan_started(job_id, lead, "f1")      # what the receiver does after the batch
    for url, key in ((f"{M}/jobs/{job_id}", None), (f"{V1}/jobs/{job_id}", READ1)):
        code, body, _ = await c.get(url, key=key)
        assert code == 200 and body["agents"]["pipe-1/a"]["state"] == "running"
        assert body["agents"]["pipe-1/a"]["entries"] == 3
    code, body, _ = await c.get(f"{M}/jobs", key=None)
    assert body["jobs"][0]["agents"]["pipe-1/a"]["entries"] == 3
    state.views["v1"].apply("pipe-1", [end("f1", entries=3)])
    code, body, _ = await c.get(f"{M}/jobs/{job_id}", key=None)
    assert body["state"] == "done" and body["agents"]["pipe-1/a"]["entries"] == 3
