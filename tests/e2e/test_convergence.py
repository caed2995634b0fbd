"""Convergence suite: a seeded random mix of operations on two sources (one of them partly
blind behind a bindfs layer) must leave the view equal to the union of the sources, through the
API tree and through the mount. Replay a failure with FUSTOR_E2E_SEED=<seed>."""

from __future__ import annotations

import os

import pytest
from e2e_harness import ProcGroup, wait_until
from e2e_setup import standard, wait_converged

pytestmark = pytest.mark.fuse


def test_initial_snapshot_matches_sources(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed)
    wait_converged(st, 30, what="after the initial snapshot")


@pytest.mark.parametrize(("mount", "blind_backdate"), [
    pytest.param(False, False, id="api"),
    pytest.param(True, False, id="api+mount"),
    pytest.param(True, True, id="full-mix"),
])
def test_random_operations_converge(group: ProcGroup, seed: int, mount: bool,
                                    blind_backdate: bool) -> None:
    """`api` checks the API tree alone, so a mount problem does not hide an API one;
    `full-mix` adds blind `touch -d` into the past (issue 7's full-audit rule)."""
    st = standard(group, seed=seed, mount=mount)
    assert st.mix is not None
    st.mix.blind_backdate = blind_backdate
    wait_converged(st, 30, what="after the initial snapshot")
    st.mix.run(150)
    wait_converged(st, 45, what="after 150 operations in a burst")
    st.mix.run(100, pause=0.01)
    wait_converged(st, 45, what="after 100 more, paced operations")


@pytest.mark.long
@pytest.mark.timeout(1200)
def test_random_operations_converge_long(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed)
    assert st.mix is not None
    wait_converged(st, 60, what="after the initial snapshot")
    for round_ in range(6):
        st.mix.run(1000, pause=0.002 if round_ % 2 else 0.0)
        wait_converged(st, 120, what=f"after round {round_ + 1} of 1000 operations")


def test_non_utf8_names_round_trip_to_the_mount(group: ProcGroup) -> None:
    """DESIGN §3: names that are not UTF-8 survive the round trip to the mount byte for byte,
    also as directories that are looked up and listed (not only as listed names)."""
    st = standard(group, mount=False)
    real = os.fsencode(st.sources[0].real)
    d = os.path.join(real, b"caf\xe9dir")
    os.mkdir(d)
    with open(os.path.join(d, b"inner\xff.dat"), "wb") as f:
        f.write(b"12345")
    path = os.fsdecode(b"/caf\xe9dir/inner\xff.dat")
    wait_until(lambda: any(c["path"] == path for c in
                           (st.api.tree("/", recursive=True)["entry"].get("children") or [])
                           for c in ([c] + (c.get("children") or []))), 15,
               "the non-UTF-8 names in the API tree")
    mnt = group.base / "mnt"
    st.cluster.start_mount(mnt)
    bmnt = os.fsencode(mnt)
    assert b"caf\xe9dir" in os.listdir(bmnt)
    assert os.listdir(os.path.join(bmnt, b"caf\xe9dir")) == [b"inner\xff.dat"]
    assert os.stat(os.path.join(bmnt, b"caf\xe9dir", b"inner\xff.dat")).st_size == 5
