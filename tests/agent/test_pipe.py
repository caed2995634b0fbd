"""One pipe against a scripted Fusion (httpx.MockTransport, real time, real inotify): roles,
commands, 410, buffer overflow → rescan, root faults never reported as an empty tree."""

# The filesystem is what these tests exercise: blocking calls on it are intended.
# ruff: noqa: ASYNC230, ASYNC240, ASYNC110

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from agent_helpers import wait_until

from fustor.agent.pipe import Pipe
from fustor.agent.sender import FusionClient
from fustor.agent.source import SourceHub
from fustor.config import AgentConfig, AgentPipeConfig, SenderConfig, SourceConfig


class FakeFusion:
    def __init__(self, role: str = "follower", **intervals: float) -> None:
        self.role = role
        self.sessions = 0
        self.rows: list[tuple[str, int, dict[str, Any]]] = []   # (sid, seq, row)
        self.events_status = 200
        self.expire_once = False
        self.commands: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.closed: list[str] = []
        self.sentinel: dict[str, list[str]] | None = None
        self.poll_waits: list[float] = []
        self.on_rows: Any = None   # called with each received batch's rows, before answering
        self.intervals = {"audit_interval_sec": 1000.0, "full_audit_interval_sec": 1000.0,
                          "sentinel_interval_sec": 1000.0, **intervals}

    def kinds(self, op: str = "scan_start") -> list[str]:
        """Kinds of the scans that started (or, with op="scan_end", ended)."""
        kind = {r["scan"]: r["kind"] for _, _, r in self.rows if r["op"] == "scan_start"}
        return [kind[r["scan"]] for _, _, r in self.rows if r["op"] == op]

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [r for _, _, r in self.rows if r["op"] == op]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if method == "POST" and path.endswith("/sessions"):
            self.sessions += 1
            return httpx.Response(201, json={
                "session_id": f"s-{self.sessions}", "pipe_id": "pipe-1", "role": self.role,
                "heartbeat_interval_sec": 0.1, "max_batch_events": 1000, **self.intervals})
        if method == "DELETE":
            self.closed.append(path.rsplit("/", 1)[1])
            return httpx.Response(204)
        sid = path.split("/")[5]
        if path.endswith("/heartbeat"):
            self.statuses.append(json.loads(request.content)["status"])
            return httpx.Response(200, json={"role": self.role})
        if path.endswith("/commands"):
            after = int(request.url.params["after"])
            self.poll_waits.append(float(request.url.params["wait"]))
            with trio.move_on_after(0.1):
                while not [c for c in self.commands if c["seq"] > after]:
                    await trio.sleep(0.01)
            cmds = [c for c in self.commands if c["seq"] > after]
            return httpx.Response(200, json={"role": self.role, "commands": cmds})
        if path.endswith("/events"):
            if self.expire_once:
                self.expire_once = False
                return httpx.Response(410, json={"error": "SessionExpiredError", "message": "gone"})
            if self.events_status != 200:
                return httpx.Response(self.events_status, json={"error": "X", "message": "down"})
            body = json.loads(request.content)
            self.rows.extend((sid, body["seq"], r) for r in body["events"])
            if self.on_rows is not None:
                self.on_rows(body["events"])
            return httpx.Response(200, json={"seq": body["seq"], "applied": len(body["events"]),
                                             "duplicate": False})
        if path.endswith("/sentinel") and self.sentinel is not None:
            return httpx.Response(200, json=self.sentinel)
        return httpx.Response(404, json={"error": "NotFoundError", "message": path})


async def start_pipe(nursery: trio.Nursery, src: Path, fake: FakeFusion,
                     buffer_events: int = 1000) -> Pipe:
    source = SourceConfig(id="s", uri=str(src))
    sender = SenderConfig(id="f", uri="http://fusion.test", key="k", timeout_sec=5)
    agent = AgentConfig(agent_id="a", buffer_events=buffer_events, sources={"s": source},
                        senders={"f": sender})
    hub = SourceHub(source)
    await nursery.start(hub.run)
    client = FusionClient(sender, transport=httpx.MockTransport(fake))
    pipe = Pipe(AgentPipeConfig(id="p", source="s", sender="f"), agent, hub, client)
    await nursery.start(pipe.run)
    return pipe


def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    for i in range(3):
        (src / "d" / f"f{i}").write_bytes(b"1")
    return src


async def test_follower_sends_realtime_only(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("follower")
    pipe = await start_pipe(nursery, src, fake)
    await wait_until(lambda: pipe.state == "following")
    (src / "d" / "new").write_bytes(b"x")
    await wait_until(lambda: any(r.get("path") == "/d/new" for _, _, r in fake.rows))
    assert fake.kinds() == []
    await wait_until(lambda: bool(fake.statuses))
    st = fake.statuses[-1]
    assert (st["watched"], st["directories"], st["state"], st["faults"]) == (3, 3, "following", [])
    assert st["buffer_overflowed"] is False


async def test_role_command_starts_snapshot_and_demotion_stops_it(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("follower")
    pipe = await start_pipe(nursery, src, fake)
    await wait_until(lambda: pipe.state == "following")
    fake.role = "leader"
    fake.commands.append({"seq": 1, "type": "role", "role": "leader"})
    await wait_until(lambda: "snapshot" in fake.kinds("scan_end"))
    assert fake.kinds("scan_end")[0] == "snapshot"
    end = fake.ops("scan_end")[0]
    assert end["ok"] is True and end["entries"] == 6   # /, d, e, f0..f2
    assert {r["path"] for r in fake.ops("dir_done") if r["scan"] == end["scan"]} == {"/", "/d", "/d/e"}
    fake.role = "follower"
    await wait_until(lambda: pipe.state == "following" and pipe.role == "follower")


async def test_find_command_runs_at_once(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("follower")
    pipe = await start_pipe(nursery, src, fake)
    await wait_until(lambda: pipe.state == "following")
    fake.commands.append({"seq": 7, "type": "find", "job_id": "j-1", "path": "/d",
                          "recursive": True})
    await wait_until(lambda: bool(fake.ops("scan_end")))
    start = fake.ops("scan_start")[0]
    assert (start["kind"], start["job_id"], start["path"]) == ("find", "j-1", "/d")
    assert fake.ops("scan_end")[0]["entries"] == 5
    assert {r["path"] for r in fake.ops("upsert") if "scan" in r} == \
        {"/d", "/d/e", "/d/f0", "/d/f1", "/d/f2"}


async def test_410_opens_a_new_session_and_resends(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("follower")
    pipe = await start_pipe(nursery, src, fake)
    await wait_until(lambda: pipe.state == "following")
    fake.expire_once = True
    (src / "after410").write_bytes(b"x")
    await wait_until(lambda: any(r.get("path") == "/after410" for _, _, r in fake.rows))
    assert fake.sessions == 2
    assert {sid for sid, _, r in fake.rows if r.get("path") == "/after410"} == {"s-2"}


async def test_buffer_overflow_then_rescan(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("follower")
    fake.events_status = 503
    pipe = await start_pipe(nursery, src, fake, buffer_events=5)
    await wait_until(lambda: pipe.state == "following")
    for i in range(20):
        (src / f"lost{i}").write_bytes(b"x")
    await wait_until(lambda: pipe.buffer.overflowed)
    await wait_until(lambda: any(s["buffer_overflowed"] for s in fake.statuses))
    fake.events_status = 200
    # Once Fusion answers again: the buffer is sent, then a rescan (a find of the whole tree,
    # as a follower) reports what was dropped.
    await wait_until(lambda: "find" in fake.kinds("scan_end"), within=15)
    seen = {r["path"] for r in fake.ops("upsert")}
    assert {f"/lost{i}" for i in range(20)} <= seen
    assert not pipe.buffer.overflowed
    start = fake.ops("scan_start")[0]
    assert (start["path"], start["recursive"]) == ("/", True)


async def test_missing_root_is_a_fault_never_an_empty_tree(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tmp_path / "later"
    fake = FakeFusion("leader")
    pipe = await start_pipe(nursery, src, fake)
    await wait_until(lambda: any(s["faults"] for s in fake.statuses))
    assert fake.statuses[-1]["faults"] == ["root_missing"]
    assert not fake.ops("dir_done")
    (src / "x").mkdir(parents=True)
    await wait_until(lambda: "snapshot" in fake.kinds("scan_end"), within=15)
    assert fake.ops("scan_end")[-1]["ok"] is True
    assert "/x" in {r["path"] for r in fake.ops("dir_done")}
    await wait_until(lambda: pipe.status()["faults"] == [])


async def test_root_gone_mid_run_audits_fail_without_dir_done(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("leader", audit_interval_sec=0.3)
    pipe = await start_pipe(nursery, src, fake)
    await wait_until(lambda: "audit" in fake.kinds("scan_end"), within=10)
    os.rename(src, tmp_path / "away")
    await wait_until(lambda: "root_missing" in pipe.status()["faults"]
                     or "root_moved" in pipe.status()["faults"], within=10)
    n = len(fake.rows)
    await wait_until(lambda: any(r["op"] == "scan_end" and not r["ok"]
                                 for _, _, r in fake.rows[n:]), within=40)
    assert not [r for _, _, r in fake.rows[n:] if r["op"] == "dir_done"]
    os.rename(tmp_path / "away", src)
    await wait_until(lambda: pipe.status()["faults"] == [], within=10)
    await wait_until(lambda: "full_audit" in fake.kinds("scan_end"), within=15)
    assert fake.ops("scan_end")[-1]["ok"] is True


async def test_audits_incremental_and_full_on_their_intervals(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("leader", audit_interval_sec=0.2, full_audit_interval_sec=1.5)
    await start_pipe(nursery, src, fake)
    # After the snapshot, a catch-up audit relists only what changed while it walked (here:
    # nothing); the first audit of a term lists everything; the next ones skip unchanged dirs.
    await wait_until(lambda: fake.kinds("scan_end").count("audit") >= 3, within=10)
    scans = [r["scan"] for r in fake.ops("scan_start") if r["kind"] == "audit"]
    done = {s: [r for r in fake.ops("dir_done") if r["scan"] == s] for s in scans[:3]}
    assert {r["path"] for r in done[scans[0]] if r["skipped"]} == {"/", "/d", "/d/e"}
    assert not [r for r in done[scans[1]] if r["skipped"]]
    assert {r["path"] for r in done[scans[2]] if r["skipped"]} == {"/", "/d", "/d/e"}
    await wait_until(lambda: "full_audit" in fake.kinds("scan_end"), within=10)
    full = next(r["scan"] for r in fake.ops("scan_start") if r["kind"] == "full_audit")
    assert not [r for r in fake.ops("dir_done") if r["scan"] == full and r["skipped"]]
    assert {r["path"] for r in fake.ops("upsert") if r.get("scan") == full} == \
        {"/", "/d", "/d/e", "/d/f0", "/d/f1", "/d/f2"}


async def test_directory_changed_during_the_snapshot_is_relisted_at_once(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("leader")

    def change_d_when_the_snapshot_ends(rows: list[dict[str, Any]]) -> None:
        if any(r["op"] == "scan_end" and r["scan"].startswith("snapshot") for r in rows):
            (src / "d" / "late").write_bytes(b"x")   # /d's mtime moves after it was listed

    fake.on_rows = change_d_when_the_snapshot_ends
    await start_pipe(nursery, src, fake)
    await wait_until(lambda: fake.kinds("scan_end")[:2] == ["snapshot", "audit"])
    catch_up = next(r["scan"] for r in fake.ops("scan_start") if r["kind"] == "audit")
    done = {r["path"]: r["skipped"] for r in fake.ops("dir_done") if r["scan"] == catch_up}
    assert done == {"/": True, "/d": False, "/d/e": True}
    listed = {r["path"] for r in fake.ops("upsert") if r.get("scan") == catch_up}
    assert {"/d/f0", "/d/f1", "/d/f2", "/d/late"} <= listed
    assert not any(p.startswith("/d/e/") for p in listed)


async def test_sentinel_stats_suspects_and_recent(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("leader", sentinel_interval_sec=0.2)
    fake.sentinel = {"suspects": ["/d/f0", "/gone"], "recent": ["/d/f1", "/d/f0"]}
    await start_pipe(nursery, src, fake)
    await wait_until(lambda: "sentinel" in fake.kinds("scan_end"), within=10)
    scan = next(r["scan"] for r in fake.ops("scan_start") if r["kind"] == "sentinel")
    rows = [r for _, _, r in fake.rows if r.get("scan") == scan]
    assert [(r["op"], r["path"]) for r in rows if r["op"] in ("upsert", "missing")] == \
        [("upsert", "/d/f0"), ("missing", "/gone"), ("upsert", "/d/f1")]
    assert rows[-1]["op"] == "scan_end" and rows[-1]["ok"] is True


async def test_session_lost_during_snapshot_starts_over(tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("leader")
    fake.expire_once = True          # the first batch (the snapshot's start) gets 410
    await start_pipe(nursery, src, fake)
    await wait_until(lambda: "snapshot" in fake.kinds("scan_end"), within=10)
    assert fake.sessions == 2
    assert {sid for sid, _, r in fake.rows} == {"s-2"}
    assert fake.ops("scan_end")[-1]["ok"] is True


async def test_find_losing_its_session_does_not_kill_the_pipe(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    src = tree(tmp_path)
    fake = FakeFusion("follower")
    pipe = await start_pipe(nursery, src, fake)
    await wait_until(lambda: pipe.state == "following")
    fake.expire_once = True
    fake.commands.append({"seq": 1, "type": "find", "job_id": "j", "path": "/d"})
    await wait_until(lambda: fake.sessions == 2, within=10)
    (src / "still").write_bytes(b"1")
    await wait_until(lambda: any(r.get("path") == "/still" for _, _, r in fake.rows))


async def test_watcher_failure_is_reported_and_retried(
        tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    import fustor.agent.watches as watcher_mod
    real = watcher_mod.Inotify
    calls = [0]

    def flaky(**kw: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(24, "Too many open files")
        return real(**kw)

    monkeypatch.setattr(watcher_mod, "Inotify", flaky)
    src = tree(tmp_path)
    hub = SourceHub(SourceConfig(id="s", uri=str(src)))
    await nursery.start(hub.run)
    assert hub.check() is not None and "watcher_failed" in hub.check()  # type: ignore[operator]
    await wait_until(lambda: hub.check() is None and hub.stats().watched == 3, within=10)


def _mount_bind(src: Path, dst: Path) -> bool:
    import subprocess
    r = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True)
    return r.returncode == 0


async def test_unmounted_root_is_a_fault_not_an_empty_tree(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    data = tree(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _mount_bind(data, mnt):
        pytest.skip("needs permission to bind-mount")
    try:
        fake = FakeFusion("leader", audit_interval_sec=0.3)
        pipe = await start_pipe(nursery, mnt, fake)
        await wait_until(lambda: "audit" in fake.kinds("scan_end"), within=10)
        await trio.run_process(["umount", str(mnt)])
        # The mount point is now an empty directory: that must not look like "all deleted".
        await wait_until(lambda: "root_unmounted" in pipe.status()["faults"], within=10)
        n = len(fake.rows)
        await wait_until(lambda: any(r["op"] == "scan_end" and not r["ok"]
                                     for _, _, r in fake.rows[n:]), within=40)
        await trio.sleep(2.5)    # several root checks later: still a fault
        assert "root_unmounted" in pipe.status()["faults"]
        assert not [r for _, _, r in fake.rows[n:] if r["op"] == "dir_done"]
        assert _mount_bind(data, mnt)
        await wait_until(lambda: pipe.status()["faults"] == [], within=10)
        await wait_until(lambda: "full_audit" in fake.kinds("scan_end"), within=15)
        assert fake.ops("scan_end")[-1]["ok"] is True
    finally:
        with trio.CancelScope(shield=True):
            await trio.run_process(["umount", "-l", str(mnt)], check=False, capture_stderr=True)


async def test_symlinked_source_path_is_followed_once(tmp_path: Path, nursery: trio.Nursery) -> None:
    data = tree(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(data)
    fake = FakeFusion("leader")
    await start_pipe(nursery, link, fake)
    await wait_until(lambda: "snapshot" in fake.kinds("scan_end"))
    assert {r["path"] for r in fake.ops("dir_done")} == {"/", "/d", "/d/e"}
    (data / "d" / "rt").write_bytes(b"1")
    await wait_until(lambda: any(r.get("path") == "/d/rt" for _, _, r in fake.rows))


async def test_command_polls_are_shorter_than_the_session_timeout(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    # An open poll keeps the session alive: a frozen agent must not hold it for 25 s.
    fake = FakeFusion("follower", session_timeout_seconds=3.0)
    await start_pipe(nursery, tree(tmp_path), fake)
    await wait_until(lambda: bool(fake.poll_waits))
    assert max(fake.poll_waits) <= 1.0
