"""The agent against a real in-process Fusion on 127.0.0.1 port 0: snapshot, realtime,
realtime find, role change on leader loss, reconnection after Fusion restarts."""

# The filesystem is what these tests exercise: blocking calls on it are intended.
# ruff: noqa: ASYNC230, ASYNC240, ASYNC110

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import trio
from agent_helpers import wait_until

from fustor.agent.runner import AgentHandle, run_agent
from fustor.config import AgentConfig, FusionConfig, parse_agent, parse_fusion
from fustor_fusion.service import FusionHandle, serve_fusion

KEY, READ = "push-key", "read-key"


def fusion_config(port: int = 0, api_port: int = 0, timeout: float = 2.0) -> FusionConfig:
    return parse_fusion({
        "host": "127.0.0.1", "port": api_port, "session_timeout_seconds": timeout,
        "receivers": {"r1": {"port": port, "api_keys": [{"key": KEY, "pipe_id": "pipe-1"}]}},
        "views": {"v1": {"api_keys": [READ], "driver_params": {"hot_file_threshold": 0.0}}},
        "pipes": {"pipe-1": {"receiver": "r1", "views": ["v1"], "sentinel_interval_sec": 0.5}},
    }, {"": Path("fusion.yaml")})


def agent_config(src: Path, url: str, agent_id: str = "agent-a") -> AgentConfig:
    return parse_agent({
        "agent_id": agent_id,
        "sources": {"s": {"uri": str(src), "driver_params": {"coalesce_sec": 0.05}}},
        "senders": {"f": {"uri": url, "credential": {"key": KEY}, "timeout_sec": 5}},
        "pipes": {"p": {"source": "s", "sender": "f"}},
    }, {"": Path("agent.yaml")})


class Api:
    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, headers={"X-API-Key": READ}, timeout=5)

    async def get(self, url: str, **params: Any) -> httpx.Response:
        return await self.http.get(url, params=params)

    async def node(self, path: str) -> dict[str, Any] | None:
        r = await self.get("/api/v1/views/v1/metadata", path=path, allow_partial="true")
        return r.json()["entry"] if r.status_code == 200 else None

    async def wait_node(self, path: str, within: float = 10.0,
                        present: bool = True) -> dict[str, Any] | None:
        with trio.fail_after(within):
            while True:
                n = await self.node(path)
                if (n is not None) == present:
                    return n
                await trio.sleep(0.05)

    async def ready(self, within: float = 10.0) -> dict[str, Any]:
        with trio.fail_after(within):
            while True:
                r = await self.get("/api/v1/views/v1/tree", path="/")
                if r.status_code == 200:
                    data: dict[str, Any] = r.json()
                    return data
                await trio.sleep(0.05)


def make_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(3):
        (src / f"d{i}").mkdir(parents=True)
        for j in range(4):
            (src / f"d{i}" / f"f{j}").write_bytes(b"x" * j)
    with open(os.fsencode(str(src)) + b"/caf\xe9", "wb") as f:
        f.write(b"1")
    return src


async def start_fusion(nursery: trio.Nursery, config: FusionConfig
                       ) -> tuple[FusionHandle, trio.CancelScope]:
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[FusionHandle] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await serve_fusion(config, task_status=task_status, tick_sec=0.2)

    handle: FusionHandle = await nursery.start(run)
    return handle, scope


async def start_agent(nursery: trio.Nursery, config: AgentConfig
                      ) -> tuple[AgentHandle, trio.CancelScope]:
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[AgentHandle] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await run_agent(config, task_status=task_status)

    handle: AgentHandle = await nursery.start(run)
    return handle, scope


async def test_snapshot_realtime_and_find(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = make_src(tmp_path)
    fusion, _ = await start_fusion(nursery, fusion_config())
    api = Api(fusion.api_url)
    agent, _ = await start_agent(nursery, agent_config(src, fusion.receiver_urls["r1"]))
    tree = await api.ready()
    names = {c["name"] for c in tree["entry"]["children"]}
    assert {"d0", "d1", "d2"} <= names
    assert any(os.fsencode(n) == b"caf\xe9" for n in names)
    assert (await api.node("/d1/f3"))["size"] == 3  # type: ignore[index]
    st = agent.status()["pipes"]["p"]
    assert st["role"] == "leader" and st["scans"]["snapshot"]["entries"] == 17
    assert st["watched"] == 4 and st["directories"] == 4

    # Realtime: a new file, a move and a delete show up in the API.
    (src / "d0" / "new.txt").write_bytes(b"hello")
    n = await api.wait_node("/d0/new.txt")
    assert n is not None and n["size"] == 5
    os.rename(src / "d1", src / "d1-moved")
    await api.wait_node("/d1-moved/f2")
    await api.wait_node("/d1/f2", present=False)
    os.unlink(src / "d2" / "f0")
    await api.wait_node("/d2/f0", present=False)

    # Realtime find: something inotify did not report (written behind the agent's back by
    # removing the watch first is hard; an excluded-from-watch path is simpler): the find
    # job completes and carries the agent's counts.
    r = await api.get("/api/v1/views/v1/tree", path="/d0", force_real_time="True")
    assert r.status_code == 200
    job_id = r.json()["job_id"]
    with trio.fail_after(10):
        while True:
            j = (await api.get(f"/api/v1/views/v1/jobs/{job_id}")).json()
            if j["state"] != "pending":
                break
            await trio.sleep(0.05)
    assert j["state"] == "done"
    counts = list(j["agents"].values())[0]
    assert counts["entries"] >= 5

    # Heartbeats carry the watch coverage into the session list.
    with trio.fail_after(10):
        while True:
            sessions = (await api.get("/api/v1/views/v1/sessions")).json()["sessions"]
            status = sessions[0].get("status") or {}
            if "watched" in status:
                break
            await trio.sleep(0.1)
    assert status["directories"] == 4 and status["faults"] == []
    # The sentinel runs on Fusion's interval against Fusion's own target list.
    await wait_until(lambda: "sentinel" in agent.status()["pipes"]["p"]["scans"], 10)
    assert agent.status()["pipes"]["p"]["scans"]["sentinel"]["entries"] >= 1
    await api.http.aclose()


async def test_follower_promoted_when_leader_leaves(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = make_src(tmp_path)
    fusion, _ = await start_fusion(nursery, fusion_config(timeout=60))
    api = Api(fusion.api_url)
    url = fusion.receiver_urls["r1"]
    a, a_scope = await start_agent(nursery, agent_config(src, url, "agent-a"))
    await wait_until(lambda: a.status()["pipes"]["p"]["role"] == "leader", 10)
    b, _ = await start_agent(nursery, agent_config(src, url, "agent-b"))
    await wait_until(lambda: b.status()["pipes"]["p"]["role"] == "follower", 10)
    await api.ready()
    # Followers send realtime events too.
    (src / "from-both").write_bytes(b"1")
    await api.wait_node("/from-both")
    a_scope.cancel()     # the leader goes away (its session is closed on the way out)
    await wait_until(lambda: b.status()["pipes"]["p"]["role"] == "leader", 10)
    await wait_until(lambda: "snapshot" in b.status()["pipes"]["p"]["scans"], 10)
    (src / "after").write_bytes(b"1")
    await api.wait_node("/after")
    await api.http.aclose()


async def test_reconnects_after_fusion_restart(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = make_src(tmp_path)
    fusion, f_scope = await start_fusion(nursery, fusion_config())
    url = fusion.receiver_urls["r1"]
    port = int(url.rsplit(":", 1)[1])
    agent, _ = await start_agent(nursery, agent_config(src, url))
    api = Api(fusion.api_url)
    await api.ready()
    await api.http.aclose()
    f_scope.cancel()
    await trio.sleep(0.3)
    # Changes while Fusion is away are buffered, then the agent reconnects (new session,
    # new snapshot as leader) and everything is there.
    (src / "while-down").write_bytes(b"1")
    await trio.sleep(0.3)
    assert agent.status()["pipes"]["p"]["buffered"] >= 1
    fusion2, _ = await start_fusion(nursery, fusion_config(port=port))
    api2 = Api(fusion2.api_url)
    await api2.ready(within=20)
    await api2.wait_node("/while-down", within=20)
    assert agent.status()["pipes"]["p"]["role"] == "leader"
    await api2.http.aclose()


async def test_reload_restarts_only_changed_pipes(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = make_src(tmp_path)
    # Sessions would take 60 s to expire: they must be closed, not left behind.
    fusion, _ = await start_fusion(nursery, fusion_config(timeout=60))
    url = fusion.receiver_urls["r1"]
    cfg = agent_config(src, url)
    agent, _ = await start_agent(nursery, cfg)
    await wait_until(lambda: agent.status()["pipes"]["p"]["session_id"] is not None, 10)
    sid = agent.status()["pipes"]["p"]["session_id"]
    await agent.reload(agent_config(src, url))          # equal config: nothing restarts
    assert agent.status()["pipes"]["p"]["session_id"] == sid
    changed = parse_agent({
        "agent_id": "agent-a",
        "sources": {"s": {"uri": str(src), "driver_params": {"coalesce_sec": 0.5}}},
        "senders": {"f": {"uri": url, "credential": {"key": KEY}, "timeout_sec": 5}},
        "pipes": {"p": {"source": "s", "sender": "f"}},
    }, {"": Path("agent.yaml")})
    await agent.reload(changed)
    await wait_until(lambda: agent.status()["pipes"]["p"]["session_id"] not in (None, sid), 10)
    await agent.reload(parse_agent({"agent_id": "agent-a"}, {"": Path("agent.yaml")}))
    assert agent.status()["pipes"] == {}
    # The session was closed on the way out, not left to expire.
    api = Api(fusion.api_url)
    with trio.fail_after(5):
        while (await api.get("/api/v1/views/v1/sessions")).json()["sessions"]:
            await trio.sleep(0.05)
    await api.http.aclose()


async def test_two_pipes_share_one_source_watcher(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = make_src(tmp_path)
    cfg = parse_fusion({
        "host": "127.0.0.1", "port": 0,
        "receivers": {"r1": {"port": 0, "api_keys": [{"key": KEY, "pipe_id": "pipe-1"},
                                                     {"key": "key-2", "pipe_id": "pipe-2"}]}},
        "views": {"v1": {"api_keys": [READ]}},
        "pipes": {"pipe-1": {"receiver": "r1", "views": ["v1"]},
                  "pipe-2": {"receiver": "r1", "views": ["v1"]}},
    }, {"": Path("fusion.yaml")})
    fusion, _ = await start_fusion(nursery, cfg)
    url = fusion.receiver_urls["r1"]
    agent, _ = await start_agent(nursery, parse_agent({
        "agent_id": "agent-a",
        "sources": {"s": {"uri": str(src)}},
        "senders": {"f1": {"uri": url, "credential": {"key": KEY}},
                    "f2": {"uri": url, "credential": {"key": "key-2"}}},
        "pipes": {"p1": {"source": "s", "sender": "f1"}, "p2": {"source": "s", "sender": "f2"}},
    }, {"": Path("agent.yaml")}))
    pipes = agent.pipes
    assert pipes["p1"].hub is pipes["p2"].hub
    api = Api(fusion.api_url)
    await api.ready()
    (src / "both").write_bytes(b"1")
    n = await api.wait_node("/both")
    assert n is not None
    with trio.fail_after(5):
        while sorted((await api.node("/both") or {}).get("sources", [])) != ["pipe-1", "pipe-2"]:
            await trio.sleep(0.05)
    await api.http.aclose()
