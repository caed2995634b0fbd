"""Wire rows: round trip, the fast upsert path agrees with the generic reader, errors name the row."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fustor import protocol as p
from fustor.errors import ProtocolError, TooLargeError


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"op": "upsert", "path": "/a/b", "type": "file", "size": 3,
                            "mtime": 10.5, "ctime": 10.5, "mode": 0o644, "uid": 1, "gid": 2}
    base.update(over)
    return base


def test_every_row_kind_round_trips() -> None:
    events: list[p.Event] = [
        p.Upsert("/a", p.Attrs("dir", 0, 1.0, 1.0, 0o755, 0, 0)),
        p.Upsert("/a/l", p.Attrs("symlink", 1, 1.0, 1.0, 0o777, 0, 0, target="../x"), scan="s",
                 parent_mtime=2.0),
        p.Upsert("/a/f", p.Attrs("file", 5, 1.0, 1.0, 0o644, 3, 4), write="progress"),
        p.Delete("/a/f"),
        p.Move("/a", "/b"),
        p.ScanStart("s", "find", "/b", False, "j-1"),
        p.DirDone("s", "/b", True),
        p.Missing("s", "/b/gone"),
        p.ScanEnd("s", False, 3, 1, "boom"),
    ]
    wire = json.loads(json.dumps({"seq": 4, "events": [p.encode(e) for e in events]}))
    batch = p.parse_batch(wire, max_events=100)
    assert batch.seq == 4
    assert batch.events == events


def test_non_utf8_names_survive_json() -> None:
    name = os.fsdecode(b"/caf\xe9")
    wire = json.dumps({"seq": 0, "events": [p.encode(p.Delete(name))]})
    assert wire.isascii()
    ev = p.parse_batch(json.loads(wire), max_events=1).events[0]
    assert isinstance(ev, p.Delete)
    assert os.fsencode(ev.path) == b"/caf\xe9"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row(path="a/b"), "events[1].path: path 'a/b' must start with '/'"),
        (row(path="/a/../b"), "'..' component"),
        (row(path="/a/"), "must not end with '/'"),
        (row(path="/a\x00b"), "NUL"),
        (row(mtime="x"), "events[1].mtime: expected a number"),
        (row(mtime=float("nan")), "events[1].mtime: expected a number"),
        (row(size=-1), "events[1].size: out of range"),
        (row(size=True), "events[1].size: expected an integer"),
        (row(mode=0o17777), "events[1].mode: out of range"),
        (row(type="fifo"), "events[1].type: must be one of file, dir, symlink"),
        (row(type="symlink"), "events[1].target: symlinks need a string target"),
        (row(target="x"), "events[1].target: only symlinks have a target"),
        (row(write="maybe"), "events[1].write: must be one of progress, complete"),
        ({"op": "move", "path": "/a", "dest": "/a/b"}, "cannot move '/a' into itself"),
        ({"op": "scan_start", "scan": "s", "kind": "nap"}, "events[1].kind: must be one of"),
        ({"op": "explode"}, "events[1].op: must be one of"),
        ("upsert", "events[1]: expected an object"),
    ],
)
def test_bad_row_is_named(bad: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        p.parse_batch({"seq": 1, "events": [row(), bad]}, max_events=10)
    assert message in info.value.message
    assert info.value.details["index"] == 1


def test_batch_shape_and_size() -> None:
    with pytest.raises(ProtocolError, match="seq"):
        p.parse_batch({"events": []}, max_events=1)
    with pytest.raises(ProtocolError, match="events: expected a list"):
        p.parse_batch({"seq": 1, "events": {}}, max_events=1)
    with pytest.raises(TooLargeError, match="limit is 1"):
        p.parse_batch({"seq": 1, "events": [row(), row()]}, max_events=1)


values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 0o20000), st.floats(allow_nan=True),
    st.text(max_size=6), st.sampled_from(["/a", "/a/b", "/", "a", "/a/", "/./a", "/a/..", "file",
                                          "dir", "symlink", "progress", "complete"]),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.dictionaries(
    st.sampled_from(["path", "type", "size", "mtime", "ctime", "mode", "uid", "gid", "target",
                     "scan", "write", "parent_mtime"]),
    values,
))
def test_fast_path_agrees_with_generic_reader(extra: dict[str, Any]) -> None:
    raw = row(**extra)
    fast = p._fast_upsert(raw)
    if fast is not None:
        # Whatever the fast path accepts, the generic reader accepts identically.
        assert _generic(raw) == fast


def _generic(raw: dict[str, Any]) -> p.Event:
    """The generic reader alone (bypassing the fast path)."""
    saved = p._fast_upsert
    try:
        p._fast_upsert = lambda r: None  # type: ignore[assignment]
        return p.parse_event(raw)
    finally:
        p._fast_upsert = saved
