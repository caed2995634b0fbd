"""FusionState.apply_config: what a reload keeps (trees of unchanged views and pipes) and what it
resets (views whose parameters changed, pipes routed to a new view), and key changes."""

from __future__ import annotations

import pytest
from fusion_rows import T0, dir_, file, scan
from service_support import PUSH1, READ1, config_dict, make_config

from fustor.errors import AuthError, ScopeError, SessionExpiredError
from fustor_fusion.state import FusionState


def snap(state: FusionState, view: str, pipe: str, n: int = 2) -> None:
    rows = [dir_("/d")] + [file(f"/d/{pipe}-{i}", mtime=T0 + i) for i in range(n)]
    state.views[view].apply(pipe, scan(f"s-{pipe}", "snapshot", rows, dirs=["/d", "/"]))


@pytest.fixture
def state() -> FusionState:
    st = FusionState(make_config())
    for pipe in ("pipe-1", "pipe-2"):
        st.sessions.create(pipe, agent_id=f"a-{pipe}")
        snap(st, "v1", pipe)
    st.sessions.create("pipe-3", agent_id="a-pipe-3")
    snap(st, "v2", "pipe-3")
    return st


def test_an_unchanged_config_changes_nothing(state: FusionState) -> None:
    v1 = state.views["v1"]
    assert state.apply_config(make_config()) == {}
    assert state.views["v1"] is v1 and v1.stats()["files"] == 4
    assert len(state.sessions.by_id) == 3


def test_removing_a_pipe_from_a_view_keeps_the_other_pipes_tree(state: FusionState) -> None:
    d = config_dict()
    d["pipes"]["pipe-2"]["views"] = ["v2"]
    changes = state.apply_config(make_config(d))
    v1, v2 = state.views["v1"], state.views["v2"]
    assert v1.pipe_ids == ["pipe-1"] and v1.stats()["files"] == 2
    assert sorted(v2.pipe_ids) == ["pipe-2", "pipe-3"] and v2.stats()["files"] == 2
    # pipe-2 now also feeds v2, whose copy of it is empty: its agents must reconnect
    assert changes["pipes_reset"] == ["pipe-2"]
    assert state.sessions.sessions_of("pipe-2") == []
    assert len(state.sessions.sessions_of("pipe-1")) == 1
    assert state.pipe_state(v2, "pipe-2")["state"] == "snapshot"
    assert state.pipe_state(v2, "pipe-3")["state"] == "ready"


def test_changed_view_parameters_rebuild_that_view_only(state: FusionState) -> None:
    d = config_dict()
    d["views"]["v2"]["driver_params"]["max_tree_items"] = 10
    old_v1 = state.views["v1"]
    changes = state.apply_config(make_config(d))
    assert changes["views_rebuilt"] == ["v2"] and changes["pipes_reset"] == ["pipe-3"]
    assert state.views["v1"] is old_v1
    assert state.views["v2"].config.driver_params.max_tree_items == 10
    assert state.views["v2"].stats()["files"] == 0
    assert len(state.sessions.sessions_of("pipe-1")) == 1


def test_removed_pipes_and_views_end_their_sessions_and_keys(state: FusionState) -> None:
    d = config_dict()
    del d["pipes"]["pipe-3"]
    del d["views"]["v2"]
    d["receivers"]["r2"]["api_keys"] = []
    d["views"]["v1"]["api_keys"] = ["read-new"]
    sid3 = state.sessions.sessions_of("pipe-3")[0].id
    changes = state.apply_config(make_config(d))
    assert changes["pipes_removed"] == ["pipe-3"] and changes["views_removed"] == ["v2"]
    with pytest.raises(SessionExpiredError):
        state.sessions.get(sid3, "pipe-3")
    with pytest.raises(AuthError):
        state.check_view_access("v1", READ1, "127.0.0.1")
    assert state.check_view_access("v1", "read-new", "127.0.0.1") is state.views["v1"]
    assert state.receiver_pipe("r1", PUSH1) == "pipe-1"


def test_a_pipe_moved_to_another_receiver_reconnects(state: FusionState) -> None:
    d = config_dict()
    d["pipes"]["pipe-1"]["receiver"] = "r2"
    d["receivers"]["r1"]["api_keys"] = [{"key": "push-2", "pipe_id": "pipe-2"}]
    d["receivers"]["r2"]["api_keys"].append({"key": PUSH1, "pipe_id": "pipe-1"})
    changes = state.apply_config(make_config(d))
    assert changes["pipes_reset"] == ["pipe-1"]
    with pytest.raises(ScopeError):
        state.receiver_pipe("r1", PUSH1)
    assert state.receiver_pipe("r2", PUSH1) == "pipe-1"
    # the tree stays served (stale) until the agents are back
    assert state.pipe_state(state.views["v1"], "pipe-1")["state"] == "stale"
