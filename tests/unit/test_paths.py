"""View path rules (DESIGN §3)."""

from __future__ import annotations

import pytest

from fustor import paths
from fustor.errors import PathError


@pytest.mark.parametrize("good", ["/", "/a", "/a/b c/d.e", "/.hidden", "/a/...", "/\udce9"])
def test_check_accepts_normalised(good: str) -> None:
    assert paths.check(good) == good


@pytest.mark.parametrize("bad", ["", "a", "/a/", "//a", "/a//b", "/./a", "/a/.", "/a/..", "/\x00", 3])
def test_check_refuses(bad: object) -> None:
    with pytest.raises(PathError):
        paths.check(bad)


def test_normalise_is_lenient_but_refuses_dotdot() -> None:
    assert paths.normalise("a//b/./c/") == "/a/b/c"
    assert paths.normalise("") == "/"
    with pytest.raises(PathError):
        paths.normalise("/a/../b")
    with pytest.raises(PathError):
        paths.normalise("/a\x00")


def test_split_join_parts() -> None:
    assert paths.split("/a/b/c") == ("/a/b", "c")
    assert paths.split("/a") == ("/", "a")
    assert paths.join("/", "a") == "/a"
    assert paths.join("/a", "b") == "/a/b"
    assert paths.parts("/") == []
    assert paths.parts("/a/b") == ["a", "b"]


def test_is_within() -> None:
    assert paths.is_within("/a/b", "/a")
    assert paths.is_within("/a", "/a")
    assert not paths.is_within("/ab", "/a")
    assert paths.is_within("/x", "/")


def test_local_round_trip_same_keys_from_different_mounts() -> None:
    assert paths.from_local("/mnt/x/", "/mnt/x/a/b") == "/a/b"
    assert paths.from_local(b"/srv/share", b"/srv/share/a/b") == "/a/b"
    assert paths.from_local("/mnt/x", "/mnt/x") == "/"
    assert paths.to_local("/srv", "/a/\udce9") == b"/srv/a/\xe9"
    with pytest.raises(PathError):
        paths.from_local("/mnt/x", "/mnt/xy/a")
