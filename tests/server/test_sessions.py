"""SessionRegistry and JobRegistry on their own: election, promotion, expiry, seq dedupe,
command long-poll wake-up, job fan-out/progress/completion/pruning."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from fustor.errors import NotFoundError, ScopeError, SessionExpiredError
from fustor.protocol import ScanEnd
from fustor_fusion.auth import is_loopback
from fustor_fusion.jobs import JobRegistry
from fustor_fusion.sessions import RECENT_SEQS, SessionRegistry


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def registry(timeout: float = 30.0) -> tuple[SessionRegistry, Clock]:
    clock = Clock()
    return SessionRegistry(lambda pid: timeout, mono=clock, wall=clock), clock


def test_first_session_leads_and_the_oldest_follower_is_promoted_on_leave() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    b = reg.create("p", agent_id="b")
    c = reg.create("p", agent_id="c")
    other = reg.create("q", agent_id="x")
    assert (a.role, b.role, c.role, other.role) == ("leader", "follower", "follower", "leader")
    assert reg.leader_of("p") is a
    reg.end(a.id)
    assert reg.leader_of("p") is b and b.role == "leader" and c.role == "follower"
    assert [cmd["type"] for cmd in b.pending(0)] == ["role"]
    assert b.pending(0)[0]["role"] == "leader"
    assert c.pending(0) == []
    with pytest.raises(SessionExpiredError):
        reg.get(a.id, "p")


def test_follower_leaving_keeps_the_leader() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    b = reg.create("p", agent_id="b")
    reg.end(b.id)
    assert reg.leader_of("p") is a and a.pending(0) == []
    with pytest.raises(NotFoundError):
        reg.end(b.id)


def test_last_leader_leaving_leaves_no_leader_but_remembers_one_existed() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    changes: list[tuple[str, str | None]] = []
    reg.on_leader.append(lambda pid, s: changes.append((pid, s.agent_id if s else None)))
    reg.end(a.id)
    assert reg.leader_of("p") is None and reg.pipe("p").ever_led
    assert changes == [("p", None)]
    b = reg.create("p", agent_id="b")
    assert b.role == "leader" and changes[-1] == ("p", "b")


def test_idle_sessions_expire_and_an_open_poll_keeps_one_alive() -> None:
    reg, clock = registry(timeout=10.0)
    a = reg.create("p", agent_id="a")
    b = reg.create("p", agent_id="b")
    clock.t += 6
    reg.get(b.id, "p")          # any request touches the session
    a.polls = 1                 # the leader has a command poll open
    clock.t += 6
    assert reg.expire() == []
    a.polls = 0
    clock.t += 0.5
    gone = reg.expire()
    assert gone == [a] and b.role == "leader"
    assert b.pending(0)[-1] == {"seq": 1, "type": "role", "role": "leader"}


def test_session_of_another_pipe_is_a_scope_error() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    with pytest.raises(ScopeError):
        reg.get(a.id, "q")
    with pytest.raises(SessionExpiredError):
        reg.get("s-unknown", "p")


def test_seq_dedupe_remembers_recent_seqs() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    assert a.claim_seq(1) and a.claim_seq(3) and a.claim_seq(2)
    assert not a.claim_seq(3) and not a.claim_seq(1)
    for i in range(10, 10 + RECENT_SEQS):
        a.claim_seq(i)
    assert a.claim_seq(1)           # forgotten after RECENT_SEQS newer ones: bounded memory


def test_commands_are_numbered_and_acknowledged_by_after() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    assert [a.push_command({"type": "find", "n": i}) for i in range(3)] == [1, 2, 3]
    assert [c["seq"] for c in a.pending(0)] == [1, 2, 3]
    assert [c["seq"] for c in a.pending(2)] == [3]
    assert a.pending(3) == []
    assert a.push_command({"type": "x"}) == 4


async def test_long_poll_wakes_when_a_command_is_queued() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    got: list[list[dict[str, object]]] = []
    async with trio.open_nursery() as nursery:
        async def poll() -> None:
            got.append(await a.wait_commands(0, 30))
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        a.push_command({"type": "find", "job_id": "j-1"})
    assert got and got[0][0]["job_id"] == "j-1"


async def test_long_poll_times_out_empty_and_ends_with_410_when_the_session_ends() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    assert await a.wait_commands(0, 0) == []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async def poll() -> None:
                with pytest.raises(SessionExpiredError):
                    await a.wait_commands(0, 30)
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            reg.end(a.id)


# ---------------------------------------------------------------------------- jobs
def jobs() -> tuple[JobRegistry, SessionRegistry, Clock]:
    reg, clock = registry()
    return JobRegistry(mono=clock, wall=clock, job_timeout_sec=60, keep_sec=100, max_jobs=3), reg, clock


def test_job_sends_find_to_each_leader_and_completes_when_all_ended() -> None:
    jr, reg, _ = jobs()
    a = reg.create("p1", agent_id="a")
    b = reg.create("p2", agent_id="b")
    f = reg.create("p1", agent_id="f")
    job, created = jr.find_or_create("v", "/d", True, [("p1", a), ("p2", b)])
    assert created and job.state == "pending"
    for s in (a, b):
        assert s.pending(0) == [{"seq": 1, "type": "find", "job_id": job.job_id, "path": "/d",
                                 "recursive": True}]
    assert f.pending(0) == []
    same, created = jr.find_or_create("v", "/d", True, [("p1", a), ("p2", b)])
    assert same is job and not created and len(a.pending(0)) == 1
    other, created = jr.find_or_create("v", "/d", False, [("p1", a)])
    assert created and other is not job
    jr.scan_started(job.job_id, a, "s1")
    assert job.agents["p1/a"].state == "running"
    jr.scan_ended(job.job_id, a, ScanEnd(scan="s1", entries=5))
    assert job.state == "pending"
    jr.scan_started(job.job_id, b, "s2")
    jr.scan_ended(job.job_id, b, ScanEnd(scan="s2", ok=False, errors=1, error="EACCES"))
    assert job.state == "done" and job.finished_at is not None
    body = job.to_json()
    assert body["agents"]["p1/a"] == {"pipe": "p1", "agent_id": "a", "state": "done",
                                      "entries": 5, "errors": 0, "error": None}
    assert body["agents"]["p2/b"]["state"] == "failed"
    again, created = jr.find_or_create("v", "/d", True, [("p1", a)])
    assert created and again is not job       # a finished job is not shared


def test_job_without_leaders_ends_at_once_and_lost_sessions_fail() -> None:
    jr, reg, _ = jobs()
    job, _ = jr.find_or_create("v", "/", True, [("p1", None)])
    assert job.state == "failed" and job.agents["p1/-"].state == "skipped"
    a = reg.create("p1", agent_id="a")
    job2, _ = jr.find_or_create("v", "/x", True, [("p1", a), ("p2", None)])
    assert job2.state == "pending"
    reg.on_end.append(jr.session_ended)
    reg.end(a.id, "timed out")
    assert job2.state == "failed" and "timed out" in (job2.agents["p1/a"].error or "")


def test_jobs_time_out_and_are_pruned() -> None:
    jr, reg, clock = jobs()
    a = reg.create("p1", agent_id="a")
    job, _ = jr.find_or_create("v", "/a", True, [("p1", a)])
    clock.t += 61
    jr.prune()
    assert job.state == "failed" and "no answer" in (job.agents["p1/a"].error or "")
    clock.t += 101
    jr.prune()
    with pytest.raises(NotFoundError):
        jr.get(job.job_id)
    made = [jr.find_or_create("v", f"/{i}", True, [("p1", None)])[0] for i in range(5)]
    assert len(jr.jobs) == 3 and list(jr.jobs) == [j.job_id for j in made[2:]]


def test_a_released_seq_is_new_again() -> None:
    reg, _ = registry()
    a = reg.create("p", agent_id="a")
    assert a.claim_seq(7)
    a.release_seq(7)
    a.release_seq(8)            # unknown: nothing to do
    assert a.claim_seq(7) and not a.claim_seq(7)


@pytest.mark.parametrize("addr,ok", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("<local>", False),
    (None, False), ("", False),
])
def test_loopback_detection(addr: str | None, ok: bool) -> None:
    assert is_loopback(addr) is ok


def test_a_scan_closed_by_the_view_ends_the_agents_part() -> None:
    jr, reg, _ = jobs()
    a = reg.create("p1", agent_id="a")
    job, _ = jr.find_or_create("v", "/d", True, [("p1", a)])
    jr.scan_closed("other-view", "p1", job.job_id, ScanEnd(scan="s1", ok=False))
    assert job.state == "pending"
    jr.scan_started(job.job_id, a, "s1")
    jr.scan_closed("v", "p1", job.job_id, ScanEnd(scan="s0", ok=True))   # another scan
    assert job.state == "pending"
    jr.scan_closed("v", "p1", job.job_id, ScanEnd(scan="s1", ok=False, error="abandoned"))
    assert job.state == "failed" and job.agents["p1/a"].error == "abandoned"
