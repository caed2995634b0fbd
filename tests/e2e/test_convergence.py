"""Convergence suite: a seeded random mix of operations on two sources (one of them partly
blind behind a bindfs layer) must leave the view equal to the union of the sources, through the
API tree and through the mount. Replay a failure with FUSTOR_E2E_SEED=<seed>."""

from __future__ import annotations

import pytest
from e2e_harness import ProcGroup
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
def test_random_operations_converge_long(group: ProcGroup, seed: int) -> None:
    st = standard(group, seed=seed)
    assert st.mix is not None
    wait_converged(st, 60, what="after the initial snapshot")
    for round_ in range(6):
        st.mix.run(1000, pause=0.002 if round_ % 2 else 0.0)
        wait_converged(st, 120, what=f"after round {round_ + 1} of 1000 operations")
