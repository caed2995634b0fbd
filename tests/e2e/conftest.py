"""Fixtures for the end-to-end suites: a process group per test that is always stopped (its
logs printed when the test failed), the replayable seed, and the `--long` switch."""

from __future__ import annotations

import os
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from e2e_harness import ProcGroup  # noqa: E402

NEEDS = ("bindfs", "fusermount3", "find", "unshare")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # H5's tests/conftest.py adds --long; without it (or without the flag) long suites skip.
    long = bool(config.getoption("--long", default=False))
    missing = [t for t in NEEDS if shutil.which(t) is None]
    for item in items:
        if "e2e" not in item.nodeid:
            continue
        if item.get_closest_marker("long") and not long:
            item.add_marker(pytest.mark.skip(reason="long form: run with --long"))
        if missing or not os.path.exists("/dev/fuse"):
            item.add_marker(pytest.mark.skip(reason=f"needs /dev/fuse and {', '.join(NEEDS)}"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)  # type: ignore[attr-defined]
    return rep


@pytest.fixture
def group(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcGroup]:
    g = ProcGroup(tmp_path)
    try:
        yield g
    finally:
        try:
            g.close()
        finally:
            rep = getattr(request.node, "rep_call", None)
            if rep is None or rep.failed:
                print("\n" + g.logs())


@pytest.fixture
def seed() -> int:
    """FUSTOR_E2E_SEED=<n> replays a run; the seed is printed (shown on failure)."""
    s = int(os.environ.get("FUSTOR_E2E_SEED") or random.randrange(1 << 31))
    print(f"\nFUSTOR_E2E_SEED={s}")
    return s


@pytest.fixture
def long_mode(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long", default=False))
