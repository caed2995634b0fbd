"""The mount's plain parts: inode table, caches, token bucket, the HTTP client's error
translation (httpx.MockTransport) and the configuration precedence."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from fustor.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    NotReadyError,
    ProtocolError,
    ScopeError,
    UnavailableError,
)
from fustor_mount.cache import TokenBucket, TTLCache
from fustor_mount.cli import build_parser, pid_file
from fustor_mount.client import FusionClient
from fustor_mount.config import load_mount_config
from fustor_mount.inodes import ROOT, InodeTable


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------------------- inodes
def test_inode_numbers_are_stable_and_counted() -> None:
    t = InodeTable()
    assert t.remember("/", "dir") == ROOT
    a = t.remember("/a", "file")
    assert a > ROOT and t.remember("/a", "file") == a
    node = t.get(a)
    assert node is not None and node.lookups == 2
    t.forget(a, 1)
    assert t.get(a) is not None
    t.forget(a, 1)
    assert t.get(a) is None and len(t) == 1
    assert t.remember("/a", "file") == a  # same number after being forgotten
    t.forget(ROOT, 5)
    assert t.get(ROOT) is not None  # the root is never forgotten
    t.forget(12345, 1)  # unknown: ignored


def test_type_change_gets_a_new_inode_and_old_one_lives_until_forgotten() -> None:
    t = InodeTable()
    f = t.remember("/x", "file")
    d = t.remember("/x", "dir")
    assert d != f
    assert t.number("/x", "dir") == d
    t.forget(f, 1)
    assert t.get(d) is not None and t.number("/x", "dir") == d


def test_hash_collision_moves_the_newcomer() -> None:
    t = InodeTable()
    a = t.number("/a", "file")
    t.ref(a, "/other", "file")  # pretend "/other" hashed to the same number first
    moved = t.remember("/a", "file")
    assert moved != a and t.get(moved).path == "/a"  # type: ignore[union-attr]
    assert t.number("/a", "file") == moved


# ---------------------------------------------------------------------------- caches
def test_ttl_cache_expires_and_stays_bounded() -> None:
    clock = Clock()
    c: TTLCache[str, int] = TTLCache(10.0, 100, clock=clock)
    c.put("a", 1)
    assert c.get("a") == 1
    clock.t += 10.0
    assert c.get("a") is None and len(c) == 0
    c.put_many([(str(i), i) for i in range(250)])
    assert len(c) <= 100 and c.get("249") == 249 and c.get("0") is None
    c.put("249", 0)
    assert c.get("249") == 0
    c.discard("249")
    assert c.get("249") is None
    pages: TTLCache[str, int] = TTLCache(10.0, 1000, clock=clock)
    pages.put("big", 1, weight=800)
    pages.put("small", 2, weight=150)
    assert pages.weight == 950 and pages.get("big") == 1
    pages.put("more", 3, weight=100)  # over the bound: the oldest go first
    assert pages.get("big") is None and pages.get("more") == 3 and pages.weight <= 1000
    pages.put("more", 4, weight=10)
    assert pages.weight == 160
    clock.t += 11  # expired items leave as new ones come, without being asked for
    pages.put("new", 5, weight=3)
    assert len(pages) == 1 and pages.weight == 3
    off: TTLCache[str, int] = TTLCache(0.0, 10, clock=clock)
    off.put("a", 1)
    assert off.get("a") is None
    with pytest.raises(ValueError):
        TTLCache(1.0, 0)


def test_token_bucket() -> None:
    clock = Clock()
    b = TokenBucket(2.0, 3, clock=clock)
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    clock.t += 0.5
    assert b.take() and not b.take()
    clock.t += 100
    assert sum(b.take() for _ in range(10)) == 3


# ---------------------------------------------------------------------------- client
def client_for(handler: Any) -> FusionClient:
    return FusionClient("http://fusion.test:8101/", "my view", "k", transport=httpx.MockTransport(handler))


async def test_client_requests_and_paging() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path.endswith("/tree"):
            return httpx.Response(200, json={"entry": {"name": "d", "type": "dir", "children": [
                {"name": "x", "type": "file"}]}, "next_cursor": "x", "meta": {"partial": True}})
        return httpx.Response(200, json={"entry": {"name": "x"}, "meta": {}})

    async with client_for(handler) as c:
        page = await c.list_page("/d", 5000, "a b")
        assert page.next_cursor == "x" and page.children[0]["name"] == "x" and page.meta["partial"]
        await c.metadata(os.fsdecode(b"/caf\xe9 x"))
    assert seen[0].headers["X-API-Key"] == "k"
    assert seen[0].url.raw_path == (b"/api/v1/views/my%20view/tree?path=/d&recursive=false"
                                    b"&limit=5000&allow_partial=true&cursor=a%20b")
    # A name that is not UTF-8 travels as its own bytes.
    assert b"path=/caf%E9%20x" in seen[1].url.raw_path


@pytest.mark.parametrize(("status", "body", "error"), [
    (404, {"error": "NotFoundError", "message": "no entry"}, NotFoundError),
    (401, {"error": "AuthError", "message": "unknown key"}, AuthError),
    (403, {"error": "ScopeError", "message": "wrong view"}, ScopeError),
    (400, {"error": "ProtocolError", "message": "bad"}, ProtocolError),
    (503, {"error": "NotReadyError", "message": "snapshot running"}, NotReadyError),
    (503, None, UnavailableError),
    (500, None, UnavailableError),
    (502, {"message": "bad gateway"}, UnavailableError),
])
async def test_client_maps_statuses(status: int, body: Any, error: type[Exception]) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="oops")

    async with client_for(handler) as c:
        with pytest.raises(error):
            await c.metadata("/x")


async def test_client_maps_transport_errors_and_bad_bodies() -> None:
    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    def timeout(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    def not_json(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>")

    for handler, error in ((refused, UnavailableError), (timeout, UnavailableError),
                           (not_json, ProtocolError)):
        async with client_for(handler) as c:
            with pytest.raises(error):
                await c.stats()


async def test_client_view_discovery() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/api/v1/management/views":
            # Fusion refuses view keys there; without a key it answers loopback clients.
            assert "X-API-Key" not in req.headers
            return httpx.Response(200, json={"views": [{"id": "a"}, {"id": "b"}]})
        if req.url.path == "/api/v1/views/a/stats":
            return httpx.Response(200, json={"entries": 1})
        return httpx.Response(403, json={"error": "ScopeError", "message": "not yours"})

    async with client_for(handler) as c:
        assert await c.management_views() == ["a", "b"]
        assert await c.can_read("a") and not await c.can_read("b")


# ---------------------------------------------------------------------------- config
def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["/mnt/x", *argv])


def test_config_defaults_file_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSTOR_HOME", str(tmp_path))
    cfg = load_mount_config(parse(), env={})
    assert (cfg.url, cfg.view, cfg.api_key, cfg.realtime_find) == ("http://127.0.0.1:8101", None, None, True)
    c = cfg.cache
    assert (c.attr_timeout, c.attr_timeout_min, c.entry_timeout, c.dir_timeout) == (60, 3, 60, 60)
    assert c.prefetch_entries == 5000
    (tmp_path / "key").write_text("from-key-file\n")
    (tmp_path / "mount.yaml").write_text(
        "url: http://f:8101\nview: v1\napi_key_file: " + str(tmp_path / "key") + "\n"
        "options: [allow_other]\nattr_timeout: 3\nnegative_timeout: 0.5\nrealtime_find: false\n"
        "find_wait_sec: 1\npage_size: 100\nlogging: {level: debug}\n")
    cfg = load_mount_config(parse(), env={})
    assert (cfg.url, cfg.view, cfg.api_key, cfg.realtime_find) == ("http://f:8101", "v1", "from-key-file", False)
    assert cfg.cache.attr_timeout == 3.0 and cfg.cache.entry_timeout == 3.0 and cfg.cache.negative_timeout == 0.5
    assert cfg.cache.page_size == 100 and cfg.find_wait_sec == 1.0 and cfg.log_level == "DEBUG"
    assert cfg.fuse_options("v1") == {"ro", "default_permissions", "fsname=fustor:v1", "subtype=fustor", "allow_other"}
    cfg = load_mount_config(parse(), env={"FUSTOR_API_KEY": "env-key", "FUSTOR_URL": "http://e:1"})
    assert cfg.api_key == "env-key" and cfg.url == "http://e:1"
    cfg = load_mount_config(parse("--api-key", "cli", "--url", "http://c:2", "--view", "v2",
                                  "-o", "attr_timeout=7,entry_timeout=8,attr_timeout_min=2",
                                  "-o", "prefetch_entries=0", "-o", "allow_root", "-D"),
                            env={"FUSTOR_API_KEY": "env-key"})
    assert (cfg.api_key, cfg.url, cfg.view, cfg.detach) == ("cli", "http://c:2", "v2", True)
    assert (cfg.cache.attr_timeout, cfg.cache.entry_timeout, cfg.cache.attr_timeout_min) == (7.0, 8.0, 2.0)
    assert cfg.cache.prefetch_entries == 0 and cfg.cache.dir_timeout == 7.0
    assert set(cfg.options) == {"allow_other", "allow_root"}


@pytest.mark.parametrize(("text", "argv", "match"), [
    ("colour: blue\n", (), "unknown key"),
    ("attr_timeout: soon\n", (), "attr_timeout"),
    ("page_size: -1\n", (), "page_size"),
    ("attr_timeout_min: soon\n", (), "attr_timeout_min"),
    ("prefetch_entries: -5\n", (), "prefetch_entries"),
    ("", ("-o", "prefetch_entries=many"), "prefetch_entries"),
    ("url: ftp://x\n", (), "URL"),
    ("", ("-o", "rw"), "rw"),
    ("", ("-o", "attr_timeout=x"), "attr_timeout"),
    ("", ("--api-key-file", "/nonexistent/key"), "key file"),
    ("[1, 2]\n", (), "mapping"),
    ("a: [\n", (), "YAML"),
])
def test_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, argv: tuple[str, ...], match: str) -> None:
    monkeypatch.setenv("FUSTOR_HOME", str(tmp_path))
    (tmp_path / "mount.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_mount_config(parse(*argv), env={})


def test_explicit_config_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_mount_config(parse("--config", str(tmp_path / "nope.yaml")), env={})


def test_pid_file_is_per_mountpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSTOR_HOME", str(tmp_path))
    a, b, c = pid_file("/mnt/a-b"), pid_file("/mnt/a/b"), pid_file("/mnt/a-b")
    assert a == c and a != b and a.parent == tmp_path and a.name.startswith("mount-mnt-a-b")
