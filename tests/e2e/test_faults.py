"""Fault suite: crashes, stops, a slow Fusion, inotify overflow and watch limits, and a source
that disappears. After each fault the view must converge to the union of the sources again
(`wait_converged`, the same check as the convergence suite)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from e2e_harness import ProcGroup, SlowProxy, bindfs_mount, bindfs_unmount, wait_until
from e2e_setup import Setup, differences, pipes, standard, wait_converged

pytestmark = pytest.mark.fuse


def _grow(root: Path, files: int, *, dirs: int = 20) -> None:
    for i in range(files):
        d = root / "bulk" / f"d{i % dirs:03d}"
        if i < dirs:
            d.mkdir(parents=True, exist_ok=True)
        with open(d / f"data_{i:06d}.dat", "wb") as f:
            f.write(b"b" * (i % 50))


def _wait_state(st: Setup, pipe: str, states: tuple[str, ...], timeout: float) -> str | None:
    """Poll the pipe's state quickly; the state reached, or None if never seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = st.api.pipe_stats(pipe).get("state")
        except Exception:
            state = None
        if state in states:
            return str(state)
        time.sleep(0.02)
    return None


def _leaders(st: Setup, pipe: str) -> list[dict]:  # type: ignore[type-arg]
    return [s for s in st.api.sessions() if s["pipe_id"] == pipe and s["role"] == "leader"
            and s.get("status", "active") not in ("expired", "closed")]


def test_fusion_sigkill_mid_snapshot_then_restart(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False, start_agents=False)
    _grow(st.sources[0].real, 20000)
    st.agents = [st.cluster.start_agent(s.watched, p.key)
                 for s, p in zip(st.sources, st.cluster.pipes, strict=False)]
    phase = _wait_state(st, "pipe-1", ("snapshot",), 20)
    print(f"SIGKILL Fusion while pipe-1 state={phase}")
    assert st.cluster.fusion is not None
    st.cluster.fusion.kill()
    assert st.mix is not None
    st.mix.run(40)
    st.cluster.start_fusion()
    st.api.wait_ready(60)
    st.mix.run(40)
    wait_converged(st, 60, what="after Fusion was SIGKILLed mid-snapshot and restarted")


def test_agent_sigkill_mid_snapshot_then_restart(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False, start_agents=False)
    _grow(st.sources[0].real, 20000)
    st.agents = [st.cluster.start_agent(s.watched, p.key)
                 for s, p in zip(st.sources, st.cluster.pipes, strict=False)]
    phase = _wait_state(st, "pipe-1", ("snapshot",), 20)
    print(f"SIGKILL agent 1 while pipe-1 state={phase}")
    st.agents[0].kill()
    assert st.mix is not None
    st.mix.run(40)
    st.agents[0] = st.cluster.start_agent(st.sources[0].watched, "push-key-1")
    st.mix.run(40)
    wait_converged(st, 60, what="after agent 1 was SIGKILLed mid-snapshot and restarted")


def test_agent_stopped_past_session_timeout_then_continued(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False)
    assert st.mix is not None
    wait_converged(st, 30, what="before the stop")
    t0 = time.monotonic()
    st.agents[0].signal(signal.SIGSTOP)
    st.mix.run(60)
    # Session timeout is 3 s. Wait (generously, so the recovery below is still exercised)
    # until Fusion has given up on the stopped agent; the bound is checked at the end.
    wait_until(lambda: not _leaders(st, "pipe-1"), 45, "the stopped agent's session to expire")
    expired_after = time.monotonic() - t0
    snap = st.api.tree("/", recursive=False)
    assert snap["entry"]["children"], "a pipe that went stale must keep its tree"
    assert st.api.pipe_stats("pipe-1").get("stale") is True, st.api.pipe_stats("pipe-1")
    st.agents[0].signal(signal.SIGCONT)
    wait_until(lambda: _leaders(st, "pipe-1"), 20, "the continued agent to lead pipe-1 again")
    st.mix.run(40)
    wait_converged(st, 60, what="after SIGSTOP past the session timeout and SIGCONT")
    assert expired_after < 3.0 + 6.0, (
        f"the stopped agent kept its session {expired_after:.1f}s with a 3s session timeout "
        "(its open command long-poll kept it alive)")


def test_leader_killed_follower_promoted(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False)
    assert st.mix is not None
    view1 = group.base / "src1-view"
    bindfs_mount(st.sources[0].real, view1)
    group.defer(lambda: bindfs_unmount(view1))
    follower = st.cluster.start_agent(view1, "push-key-1", name="follower")
    wait_until(lambda: len([s for s in st.api.sessions() if s["pipe_id"] == "pipe-1"]) >= 2, 20,
               "the follower's session")
    leaders = _leaders(st, "pipe-1")
    assert len(leaders) == 1 and leaders[0]["agent_id"] == "e2e-agent-src1", st.api.sessions()
    # A follower sends realtime events but never scans.
    for _ in range(10):
        for s in st.api.sessions():
            if s["pipe_id"] == "pipe-1" and s["role"] == "follower":
                state = (s.get("status") or {}).get("state") if isinstance(s.get("status"), dict) else None
                assert state not in ("snapshot", "audit", "full_audit"), s
        time.sleep(0.2)
    st.agents[0].kill()
    st.mix.run(60)  # src1 writes are now blind to every live agent of pipe-1
    wait_until(lambda: [s["agent_id"] for s in _leaders(st, "pipe-1")] == ["e2e-follower"], 20,
               "the follower to be promoted to leader")
    st.mix.run(40)
    wait_converged(st, 60, what="after the leader was killed and the follower promoted")
    assert follower.alive()


def test_fusion_answering_slowly(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False, start_agents=False)
    assert st.mix is not None
    proxy = SlowProxy(st.cluster.receiver_port, delay=0.3)
    group.defer(proxy.close)
    st.agents = [st.cluster.start_agent(s.watched, p.key, receiver_url=proxy.url)
                 for s, p in zip(st.sources, st.cluster.pipes, strict=False)]
    st.api.wait_ready(60)
    st.mix.run(80, pause=0.01)
    wait_converged(st, 60, what="with every Fusion answer delayed by 0.3 s")
    # Fusion stops answering for a moment (shorter than the session timeout).
    assert st.cluster.fusion is not None
    st.cluster.fusion.signal(signal.SIGSTOP)
    try:
        st.mix.run(40)
        time.sleep(2.0)
    finally:
        st.cluster.fusion.signal(signal.SIGCONT)
    wait_converged(st, 60, what="after Fusion froze for 2 s")


@pytest.mark.parametrize("files", [pytest.param(20000, id="20k"),
                                   pytest.param(60000, id="60k", marks=pytest.mark.long)])
def test_inotify_queue_overflow(group: ProcGroup, seed: int, files: int) -> None:
    st = standard(group, seed=seed, mount=False)
    wait_converged(st, 30, what="before the burst")
    # With the agent stopped, the kernel queue (max_queued_events) overflows for certain.
    st.agents[0].signal(signal.SIGSTOP)
    try:
        _grow(st.sources[0].real, files)
    finally:
        st.agents[0].signal(signal.SIGCONT)
    wait_converged(st, 90, what=f"after a burst of {files} creates overflowed inotify")


def test_watch_limit_smaller_than_tree(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False, start_agents=False)
    assert st.mix is not None
    _grow(st.sources[0].real, 400, dirs=60)
    limit = 10
    # max_inotify_watches is per user namespace: a private one caps only this agent.
    wrap = ["unshare", "-U", "-r", "sh", "-c",
            f'echo {limit} > /proc/sys/user/max_inotify_watches && exec "$0" "$@"']
    st.agents = [st.cluster.start_agent(st.sources[0].watched, "push-key-1", wrap=wrap),
                 st.cluster.start_agent(st.sources[1].watched, "push-key-2")]
    st.api.wait_ready(60)
    st.mix.run(100, pause=0.005)
    for i in range(30):  # new files in unwatched directories (the mix may have moved bulk/*)
        d = st.sources[0].real / "late" / f"d{i:03d}"
        d.mkdir(parents=True)
        (d / "late.dat").write_bytes(b"l" * i)
    wait_converged(st, 60, what=f"with {limit} inotify watches for > 60 directories")


def _stays_unchanged(st: Setup, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lines = differences(st)
        assert not lines, f"the view changed {what}:\n" + "\n".join(lines)
        time.sleep(0.5)


def test_source_unmounted_under_agent_view_does_not_empty(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False, pipe_specs=pipes(audit=1.0, full=2.0))
    assert st.mix is not None
    wait_converged(st, 30, what="before the unmount")
    layer = st.sources[1].watched
    bindfs_unmount(layer)  # the agent now sees the empty directory under the mountpoint
    assert not os.path.ismount(layer) and not os.listdir(layer)
    _stays_unchanged(st, 7.0, "while source 2 was unmounted (pipe-2 must keep its tree)")
    bindfs_mount(st.sources[1].real, layer)
    st.mix.run(60)
    wait_converged(st, 60, what="after source 2 was mounted again")


def test_source_removed_under_agent_view_does_not_empty(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed, mount=False, pipe_specs=pipes(audit=1.0, full=2.0))
    assert st.mix is not None
    wait_converged(st, 30, what="before the removal")
    src = st.sources[0]
    away = group.base / "src1-away"
    os.rename(src.real, away)
    src.real = away  # the expected union still holds those files: the storage went away
    try:
        _stays_unchanged(st, 7.0, "while source 1's directory was gone")
    finally:
        os.rename(away, group.base / "src1")
        src.real = group.base / "src1"
    st.mix.run(60)
    wait_converged(st, 60, what="after source 1's directory came back")
