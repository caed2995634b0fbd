"""`ingest` on its own: big batches are applied in chunks that let other tasks run in between,
a cancelled request still applies its whole batch, and a session that ended meanwhile gets 410."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.lowlevel
from fusion_rows import synthetic_snapshot
from service_support import make_config

from fustor.errors import ProtocolError, SessionExpiredError
from fustor.protocol import Event, encode
from fustor_fusion import receiver
from fustor_fusion.state import FusionState
from fustor_fusion.view import View


def body(n: int, seq: int = 1) -> bytes:
    rows = [encode(e) for e in synthetic_snapshot(n, fanout=500)]
    return json.dumps({"seq": seq, "events": rows}).encode()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    log: list[Any] = []
    orig = View.apply

    def apply(self: View, pipe_id: str, events: Sequence[Event]) -> int:
        log.append(("apply", len(events)))
        return orig(self, pipe_id, events)
    monkeypatch.setattr(View, "apply", apply)
    return log


async def test_big_batches_are_applied_in_chunks_with_other_tasks_running_between(
        traced: list[Any]) -> None:
    state = FusionState(make_config())
    s = state.sessions.create("pipe-1", agent_id="a")
    data = body(5000)
    assert len(data) > receiver.THREAD_PARSE_BYTES      # the threaded decode path too

    async def other() -> None:
        while True:
            traced.append("other")
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        result = await receiver.ingest(state, state.pipes["pipe-1"], s, data, 20000)
        nursery.cancel_scope.cancel()
    n = result["applied"]
    assert n > 5000 and result["duplicate"] is False
    applies = [e for e in traced if e != "other"]
    assert [k for _, k in applies] == [receiver.CHUNK_ROWS] * (n // receiver.CHUNK_ROWS) + (
        [n % receiver.CHUNK_ROWS] if n % receiver.CHUNK_ROWS else [])
    # trio runs every runnable task once per scheduling batch, in random order: if ingest
    # yields after each chunk, the other task runs between any chunk and the one after next.
    at = [i for i, e in enumerate(traced) if e != "other"]
    assert len(at) >= 3
    for i in range(len(at) - 2):
        assert "other" in traced[at[i]:at[i + 2]], traced
    assert state.views["v1"].tree_of("pipe-1").entries == 5000
    assert state.pipes["pipe-1"].events_applied == n


async def test_a_cancelled_request_still_applies_its_whole_batch(traced: list[Any]) -> None:
    state = FusionState(make_config())
    s = state.sessions.create("pipe-1", agent_id="a")
    data = body(3000)
    with trio.CancelScope() as scope:
        orig = View.apply

        def apply_then_cancel(self: View, pipe_id: str, events: Sequence[Event]) -> int:
            scope.cancel()        # the client hangs up during the first chunk
            return orig(self, pipe_id, events)
        View.apply = apply_then_cancel  # type: ignore[method-assign]
        try:
            await receiver.ingest(state, state.pipes["pipe-1"], s, data, 20000)
        finally:
            View.apply = orig  # type: ignore[method-assign]
    assert scope.cancel_called     # (without the shield the next checkpoint would stop it)
    assert state.views["v1"].tree_of("pipe-1").entries == 3000
    assert state.views["v1"].snapshot_done("pipe-1")


async def test_a_session_that_ended_during_decoding_gets_410_and_nothing_applied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    state = FusionState(make_config())
    s = state.sessions.create("pipe-1", agent_id="a")
    orig = receiver.decode_batch

    def decode_and_end(raw: bytes, max_events: int) -> Any:
        out = orig(raw, max_events)
        state.sessions.end(s.id, "expired meanwhile")
        return out
    monkeypatch.setattr(receiver, "decode_batch", decode_and_end)
    with pytest.raises(SessionExpiredError):
        await receiver.ingest(state, state.pipes["pipe-1"], s, body(100), 20000)
    assert state.views["v1"].tree_of("pipe-1").entries == 0


async def test_a_leader_change_mid_batch_spares_the_find_that_batch_started() -> None:
    # A follower's big batch starts a find; the leader leaves between two chunks of it. The
    # find belongs to a live session: it must go on (and end with its missing-item removal).
    state = FusionState(make_config())
    state.sessions.create("pipe-1", agent_id="lead")
    fol = state.sessions.create("pipe-1", agent_id="fol")
    rows = [{"op": "scan_start", "scan": "fb", "kind": "find", "path": "/", "recursive": True}]
    rows += [encode(e) for e in synthetic_snapshot(5000, fanout=500, scan_id="fb")][1:-1]
    data = json.dumps({"seq": 1, "events": rows}).encode()
    view = state.views["v1"]

    async def leader_leaves() -> None:
        while not view.tree_of("pipe-1").entries:        # the first chunk is in
            await trio.lowlevel.checkpoint()
        state.sessions.end(state.sessions.leader_of("pipe-1").id)  # type: ignore[union-attr]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader_leaves)
        await receiver.ingest(state, state.pipes["pipe-1"], fol, data, 20000)
    assert state.sessions.leader_of("pipe-1") is fol
    assert [s["scan"] for s in view.scan_progress("pipe-1")["running"]] == ["fb"]


def test_agent_shaped_bodies_decode_in_pieces_like_json_loads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receiver, "DECODE_PIECE_BYTES", 300)
    # rows as agents write them: "op" first
    rows: list[Any] = [{"op": d.pop("op"), **d} for d in
                       (encode(e) for e in synthetic_snapshot(40, fanout=10))]
    rows[5]["path"] = '/d00000/odd},{"op":"x"}]}'         # the separator inside a string
    rows[9]["extra"] = [{"op": "nested"}, {"op": "again"}]  # ... and between nested values
    text = json.dumps({"seq": 7, "events": rows}, separators=(",", ":"))
    assert text.count('},{"op":') == len(rows)     # one more than row boundaries: the nested
    got = receiver._loads_in_pieces(text.encode())
    assert got == {"seq": 7, "events": rows}
    fallbacks = 0
    for size in range(1, 3000, 7):        # cuts everywhere, the nested separator included
        monkeypatch.setattr(receiver, "DECODE_PIECE_BYTES", size)
        pieces = receiver._loads_in_pieces(text.encode())
        assert pieces in (None, got)
        fallbacks += pieces is None
    assert fallbacks
    assert receiver._loads_in_pieces((text + " \n").encode()) == got
    # not the agents' shape, or not valid: None, and decode_batch decodes the whole body
    for other in (json.dumps({"events": rows, "seq": 7}), text.replace('"seq":7', '"seq":07'),
                  text[:-1] + ',"seq":8}', text.replace('"events":[', '"events": ['),
                  text.replace('{"op":"nested"}', '{"op":"nested"]')):
        assert receiver._loads_in_pieces(other.encode()) is None
    bad = text.replace('{"op":"nested"}', '{"op":"nested"]').encode()
    with pytest.raises(ProtocolError, match="not valid JSON"):
        receiver.decode_batch(bad, 20000)
    batch, marks = receiver.decode_batch(text.encode(), 20000)
    assert batch.seq == 7 and len(batch.events) == len(rows) and len(marks) == 2
