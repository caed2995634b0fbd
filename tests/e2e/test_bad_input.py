"""Bad input on every HTTP endpoint (receiver, query, management): a 4xx with a clear JSON
message, and the tree exactly as it was. Request bodies and parameters come from hypothesis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_harness import VIEW, VIEW_KEY, Cluster, PipeSpec, ProcGroup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuse

PUSH1, PUSH2, OTHER_KEY, MGMT = "push-key-1", "push-key-2", "other-view-key", "mgmt-key"
MAX_EVENTS, MAX_BYTES = 500, 256 * 1024
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
OLD = 1_600_000_000.5


class Fake:
    """A hand-driven agent session on pipe-1 (it fed the snapshot the tests then guard)."""

    def __init__(self, cluster: Cluster) -> None:
        # Refused requests each get a fresh connection (`rx_post`), so a connection wedged by a
        # refusal shows up in test_connection_survives_refusals only, not everywhere.
        self.rx = httpx.Client(base_url=cluster.receiver_url, timeout=10.0)
        self.rx_url = cluster.receiver_url
        self.api = httpx.Client(base_url=cluster.api_url, timeout=10.0,
                                headers={"X-API-Key": VIEW_KEY})
        self.seq = 0
        self.sid = self.new_session(PUSH1)

    def new_session(self, key: str) -> str:
        r = self.rx.post("/api/v1/pipe/sessions", headers={"X-API-Key": key},
                         json={"agent_id": f"fake-{key}", "host": "test", "source_uri": "/x",
                               "capabilities": ["realtime", "snapshot"], "version": "0.9.0"})
        assert r.status_code == 201, r.text
        return str(r.json()["session_id"])

    def close(self) -> None:
        self.rx.close()
        self.api.close()

    def alive(self) -> None:
        r = self.rx.post(f"/api/v1/pipe/sessions/{self.sid}/heartbeat",
                         headers={"X-API-Key": PUSH1}, json={"status": {}})
        if r.status_code == 410:
            self.sid = self.new_session(PUSH1)

    def post_events(self, body: Any, *, key: str = PUSH1, raw: bytes | None = None,
                    sid: str | None = None) -> httpx.Response:
        self.alive()
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(f"{self.rx_url}/api/v1/pipe/sessions/{sid or self.sid}/events",
                          content=content, timeout=10.0,
                          headers={"X-API-Key": key, "Content-Type": "application/json"})

    def rx_post(self, url: str, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.rx_url}{url}", timeout=10.0, **kw)

    def rx_get(self, url: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.rx_url}{url}", timeout=10.0, **kw)

    def tree(self) -> Any:
        r = self.api.get(f"/api/v1/views/{VIEW}/tree", params={"path": "/"})
        assert r.status_code == 200, r.text
        return _stable(r.json()["entry"])


def _stable(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _stable(v) for k, v in node.items() if k != "integrity_suspect"}
    if isinstance(node, list):
        return [_stable(v) for v in node]
    return node


def attrs(kind: str = "file", size: int = 1) -> dict[str, Any]:
    return {"type": kind, "size": size, "mtime": OLD, "ctime": OLD, "mode": 0o644,
            "uid": 0, "gid": 0}


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fake]:
    group = ProcGroup(tmp_path_factory.mktemp("bad-input"))
    try:
        cluster = Cluster(group, [PipeSpec("pipe-1", PUSH1), PipeSpec("pipe-2", PUSH2,
                                                                     views=("other-view",))])
        cluster.start_fusion(session_timeout=30.0, management_keys=[MGMT],
                             views={VIEW: [VIEW_KEY], "other-view": [OTHER_KEY]},
                             receiver_extra={"max_batch_events": MAX_EVENTS,
                                             "max_batch_bytes": MAX_BYTES})
        f = Fake(cluster)
        group.defer(f.close)
        rows = [{"op": "scan_start", "scan": "s1", "kind": "snapshot", "path": "/",
                 "recursive": True},
                {"op": "upsert", "path": "/a", "scan": "s1", **attrs("dir", 4096)},
                {"op": "upsert", "path": "/a/f1", "scan": "s1", **attrs("file", 10)},
                {"op": "upsert", "path": "/b", "scan": "s1", **attrs("file", 20)},
                {"op": "dir_done", "scan": "s1", "path": "/a", "skipped": False},
                {"op": "dir_done", "scan": "s1", "path": "/", "skipped": False},
                {"op": "scan_end", "scan": "s1", "ok": True, "entries": 3, "errors": 0}]
        f.seq += 1
        r = f.post_events({"seq": f.seq, "events": rows})
        assert r.status_code == 200, r.text
        yield f
    finally:
        try:
            group.close()
        finally:
            print(group.logs())


def _clear_4xx(r: httpx.Response, *codes: int) -> None:
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    if codes:
        assert r.status_code in codes, f"{r.status_code}: {r.text[:300]}"
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and len(body["message"]) > 5, body


# ---------------------------------------------------------------------------- receiver
def test_snapshot_fed_by_hand_is_served(fake: Fake) -> None:
    names = [c["name"] for c in fake.tree()["children"]]
    assert names == ["a", "b"]


def test_session_requests_refused(fake: Fake) -> None:
    before = fake.tree()
    url = "/api/v1/pipe/sessions"
    good = {"agent_id": "x", "host": "h", "source_uri": "/s", "capabilities": [], "version": "1"}
    _clear_4xx(fake.rx_post(url, json=good), 401)
    _clear_4xx(fake.rx_post(url, json=good, headers={"X-API-Key": "nope"}), 401)
    _clear_4xx(fake.rx_post(url, json=good, headers={"X-API-Key": VIEW_KEY}), 401, 403)
    _clear_4xx(fake.rx_post(url, content=b"{not json", headers={"X-API-Key": PUSH1}), 400)
    _clear_4xx(fake.rx_post(url, json=[1, 2], headers={"X-API-Key": PUSH1}), 400, 422)
    _clear_4xx(fake.rx_post(url, json={**good, "agent_id": 5}, headers={"X-API-Key": PUSH1}),
               400, 422)
    _clear_4xx(fake.rx_post(f"{url}/s-unknown/heartbeat", json={"status": {}},
                            headers={"X-API-Key": PUSH1}), 404, 410)
    _clear_4xx(fake.rx_get(f"{url}/{fake.sid}/commands", params={"after": "x", "wait": 0},
                           headers={"X-API-Key": PUSH1}), 400, 422)
    for method, sub in [("GET", "commands"), ("GET", "sentinel"), ("POST", "heartbeat"),
                        ("DELETE", "")]:
        target = f"{fake.rx_url}{url}/{fake.sid}" + (f"/{sub}" if sub else "")
        _clear_4xx(httpx.request(method, target, timeout=10.0, params={"wait": 0}), 401)
        _clear_4xx(httpx.request(method, target, timeout=10.0, params={"wait": 0},
                                 headers={"X-API-Key": PUSH2}), 403, 404, 410)
        _clear_4xx(httpx.request(method, target, timeout=10.0, params={"wait": 0},
                                 headers={"X-API-Key": VIEW_KEY}), 401, 403)
    assert fake.tree() == before


def test_connection_survives_refusals(fake: Fake) -> None:
    """An agent retries on one keep-alive connection: a 4xx must not wedge it."""
    url = "/api/v1/pipe/sessions"
    good = {"agent_id": "x", "host": "h", "source_uri": "/s", "capabilities": [], "version": "1"}
    with httpx.Client(base_url=fake.rx_url, timeout=5.0) as c:
        for i in range(6):
            headers = {"X-API-Key": "nope"} if i % 2 else {}
            _clear_4xx(c.post(url, json=good, headers=headers), 401)
        r = c.post(url, content=b"{broken", headers={"X-API-Key": PUSH1})
        _clear_4xx(r, 400)
        assert c.get("/api/v1/health").status_code == 200


def test_wrong_pipe_key_and_follower_scan_refused(fake: Fake) -> None:
    before = fake.tree()
    row = {"op": "upsert", "path": "/intruder", **attrs()}
    fake.seq += 1
    _clear_4xx(fake.post_events({"seq": fake.seq, "events": [row]}, key=PUSH2), 403)
    _clear_4xx(fake.post_events({"seq": fake.seq, "events": [row]}, key=VIEW_KEY), 401, 403)
    follower = fake.new_session(PUSH1)
    try:
        fake.seq += 1
        r = fake.post_events({"seq": fake.seq, "events": [
            {"op": "scan_start", "scan": "f1", "kind": "snapshot", "path": "/", "recursive": True},
            {"op": "scan_end", "scan": "f1", "ok": True, "entries": 0, "errors": 0}]},
            sid=follower)
        _clear_4xx(r, 403)
    finally:
        fake.rx.delete(f"/api/v1/pipe/sessions/{follower}", headers={"X-API-Key": PUSH1})
    assert fake.tree() == before


def test_oversized_batches_refused(fake: Fake) -> None:
    before = fake.tree()
    rows = [{"op": "upsert", "path": f"/big{i}", **attrs()} for i in range(MAX_EVENTS + 1)]
    fake.seq += 1
    _clear_4xx(fake.post_events({"seq": fake.seq, "events": rows}), 413)
    pad = {"op": "upsert", "path": "/" + "p" * 200, **attrs()}
    huge = {"seq": fake.seq, "events": [pad] * (MAX_BYTES // 200)}
    _clear_4xx(fake.post_events(huge), 413)
    _clear_4xx(fake.post_events(None, raw=b"[" * 2_000_000), 400, 413)
    assert fake.tree() == before


BAD_PATHS = ["/a/../b", "/a/./b", "a/b", "/a/", "//a", "/a\x00b", "", "/a//b", ".."]
BAD_FIELDS: list[tuple[str, Any]] = [
    ("path", st.sampled_from(BAD_PATHS)),
    ("path", st.integers() | st.none() | st.lists(st.text(), max_size=2)),
    ("type", st.text(max_size=8).filter(lambda t: t not in ("file", "dir", "symlink"))),
    ("size", st.integers(max_value=-1) | st.text(max_size=4) | st.floats(allow_nan=True)),
    ("mtime", st.text(max_size=4) | st.none() | st.just(float("nan"))),
    ("mode", st.integers(min_value=0o10000) | st.integers(max_value=-1)),
    ("uid", st.integers(max_value=-1) | st.text(max_size=3)),
    ("op", st.text(max_size=8).filter(lambda t: t not in ("upsert", "delete", "move",
                                                            "scan_start", "dir_done", "missing",
                                                            "scan_end"))),
]


@SETTINGS
@given(st.sampled_from(range(len(BAD_FIELDS))).flatmap(
    lambda i: st.tuples(st.just(BAD_FIELDS[i][0]), BAD_FIELDS[i][1])),
    st.booleans())
def test_bad_row_refuses_whole_batch(fake: Fake, bad: tuple[str, Any], drop: bool) -> None:
    field, value = bad
    before = fake.tree()
    good = {"op": "upsert", "path": "/zz_valid", **attrs()}
    row = {"op": "upsert", "path": "/zz_bad", **attrs()}
    if drop and field in ("path", "type", "size", "mtime", "mode", "op"):  # the required ones
        del row[field]
    else:
        row[field] = value
    fake.seq += 1
    try:
        body = json.dumps({"seq": fake.seq, "events": [good, row]}, allow_nan=True)
    except ValueError:
        return
    r = fake.post_events(None, raw=body.encode())
    _clear_4xx(r, 400, 422)
    assert fake.tree() == before, "a refused batch changed the tree"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12)


@SETTINGS
@given(json_values.filter(lambda v: not (isinstance(v, dict) and isinstance(v.get("events"), list)
                                         and isinstance(v.get("seq"), int))))
def test_random_json_event_bodies_refused(fake: Fake, body: Any) -> None:
    before = fake.tree()
    _clear_4xx(fake.post_events(body), 400, 422)
    assert fake.tree() == before


@SETTINGS
@given(st.binary(max_size=200).filter(lambda b: _not_json(b)))
def test_non_json_event_bodies_refused(fake: Fake, raw: bytes) -> None:
    before = fake.tree()
    _clear_4xx(fake.post_events(None, raw=raw), 400)
    assert fake.tree() == before


def _not_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return True
    return False


# ---------------------------------------------------------------------------- query API
def q(fake: Fake, endpoint: str, key: str | None = VIEW_KEY, view: str = VIEW,
      **params: Any) -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    base = str(fake.api.base_url).rstrip("/")
    return httpx.get(f"{base}/api/v1/views/{view}/{endpoint}", params=params, headers=headers,
                     timeout=10.0)


@pytest.mark.parametrize("endpoint", ["tree", "metadata", "walk", "search", "stats",
                                      "blind-spots", "suspects", "sessions"])
def test_query_keys_and_scopes(fake: Fake, endpoint: str) -> None:
    params = {"path": "/a", "pattern": "*"}
    _clear_4xx(q(fake, endpoint, None, **params), 401)
    _clear_4xx(q(fake, endpoint, "unknown-key", **params), 401)
    _clear_4xx(q(fake, endpoint, PUSH1, **params), 403)
    _clear_4xx(q(fake, endpoint, OTHER_KEY, **params), 403)
    _clear_4xx(q(fake, endpoint, MGMT, **params), 401, 403)
    assert q(fake, endpoint, **params).status_code == 200


def test_query_bad_parameters(fake: Fake) -> None:
    before = fake.tree()
    for path in ["/a/../b", "/a\x00", "../etc"]:
        _clear_4xx(q(fake, "tree", path=path), 400)
        _clear_4xx(q(fake, "metadata", path=path), 400)
    _clear_4xx(q(fake, "tree", path="/nope"), 404)
    _clear_4xx(q(fake, "metadata", path="/nope"), 404)
    _clear_4xx(q(fake, "tree", view="no-such-view"), 403, 404)
    _clear_4xx(q(fake, "tree", limit="ten"), 400)
    _clear_4xx(q(fake, "tree", limit="-1"), 400)
    _clear_4xx(q(fake, "tree", max_depth="x"), 400)
    _clear_4xx(q(fake, "tree", recursive="perhaps"), 400)
    _clear_4xx(q(fake, "tree", cursor="garbage\x01", recursive="false", limit="1"), 400)
    _clear_4xx(q(fake, "search"), 400)
    _clear_4xx(q(fake, "search", pattern="*", limit="many"), 400)
    _clear_4xx(q(fake, "jobs/j-unknown"), 404)
    _clear_4xx(q(fake, "walk", path="/a/f1"), 404)  # a file has no listing
    _clear_4xx(q(fake, "walk", path="/a", **{"from": "/"}), 400)  # from outside path
    _clear_4xx(q(fake, "walk", max_entries="0"), 400)
    _clear_4xx(q(fake, "walk", max_entries="all"), 400)
    assert fake.tree() == before


@SETTINGS
@given(st.text(max_size=30), st.sampled_from(["tree", "metadata"]))
def test_query_random_paths(fake: Fake, path: str, endpoint: str) -> None:
    r = q(fake, endpoint, path=path)
    if r.status_code == 200:
        return
    _clear_4xx(r, 400, 404)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["limit", "max_depth", "recursive", "only_path",
                                        "allow_partial", "cursor", "path"]),
                       st.text(max_size=8), min_size=1))
def test_query_random_parameters(fake: Fake, params: dict[str, str]) -> None:
    r = q(fake, "tree", **params)
    if r.status_code != 200:
        _clear_4xx(r, 400, 404)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["from", "path", "max_entries", "allow_partial"]),
                       st.text(max_size=8), min_size=1))
def test_walk_random_parameters(fake: Fake, params: dict[str, str]) -> None:
    r = q(fake, "walk", **params)
    if r.status_code != 200:
        _clear_4xx(r, 400, 404)


def test_management_needs_its_key(fake: Fake) -> None:
    base = str(fake.api.base_url).rstrip("/") + "/api/v1/management"
    for endpoint in ["jobs", "views", "pipes", "sessions", "jobs/j-x"]:
        _clear_4xx(httpx.get(f"{base}/{endpoint}", timeout=10.0), 401)
        _clear_4xx(httpx.get(f"{base}/{endpoint}", headers={"X-API-Key": VIEW_KEY},
                             timeout=10.0), 403)
    assert httpx.get(f"{base}/jobs", headers={"X-API-Key": MGMT}, timeout=10.0).status_code == 200
    r = httpx.get(f"{base}/jobs/j-unknown", headers={"X-API-Key": MGMT}, timeout=10.0)
    _clear_4xx(r, 404)
