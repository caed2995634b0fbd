"""The standard end-to-end setup and the convergence check used after every scenario.

Setup: Fusion with one view fed by two pipes; agent 1 watches source 1 directly, agent 2
watches a bindfs view of source 2 (so writes made in source 2 itself are blind); optionally a
fustor-mount of the view. `wait_converged` polls until the view (API tree and mount) equals the
union of the sources, and fails with a readable diff, the seed and the operation log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from e2e_harness import (
    Api,
    ApiError,
    Cluster,
    PipeSpec,
    Proc,
    ProcGroup,
    bindfs_mount,
    bindfs_unmount,
    dump_json,
)
from e2e_ops import OpMix, Source
from e2e_trees import Expected, Listing, api_listing, diff, find_listing


@dataclass
class Setup:
    group: ProcGroup
    cluster: Cluster
    api: Api
    sources: list[Source]
    agents: list[Proc] = field(default_factory=list)
    mnt: Path | None = None
    mount: Proc | None = None
    mix: OpMix | None = None


def pipes(audit: float = 1.5, full: float = 3.0, sentinel: float = 2.0) -> list[PipeSpec]:
    return [PipeSpec("pipe-1", "push-key-1", audit, full, sentinel),
            PipeSpec("pipe-2", "push-key-2", audit, full, sentinel)]


def make_sources(base: Path, group: ProcGroup) -> list[Source]:
    s1 = base / "src1"
    s2 = base / "src2"
    v2 = base / "src2-view"
    s1.mkdir()
    s2.mkdir()
    bindfs_mount(s2, v2)
    group.defer(lambda: bindfs_unmount(v2))
    return [Source("src1", s1, s1), Source("src2", s2, v2)]


def standard(group: ProcGroup, *, seed: int = 0, mount: bool = True, populate: bool = True,
             start_agents: bool = True, pipe_specs: list[PipeSpec] | None = None,
             **fusion_kwargs: object) -> Setup:
    cluster = Cluster(group, pipe_specs or pipes())
    sources = make_sources(group.base, group)
    # Blind backdating needs issue 7's full-audit rule; only the full-mix convergence test
    # turns it on, so the other scenarios test what they are about.
    mix = OpMix(seed, sources, blind_backdate=False)
    if populate:
        for s in sources:
            mix.populate(s)
    cluster.start_fusion(**fusion_kwargs)
    st = Setup(group, cluster, cluster.api(), sources, mix=mix)
    if start_agents:
        st.agents = [cluster.start_agent(s.watched, p.key, name=f"agent-{s.name}")
                     for s, p in zip(sources, cluster.pipes, strict=False)]
        st.api.wait_ready(60)
    if mount:
        st.mnt = group.base / "mnt"
        st.mount = cluster.start_mount(st.mnt)
    return st


def snapshot_state(st: Setup) -> tuple[Expected, Listing | None, Listing | None, str]:
    expected = Expected(find_listing(s.real) for s in st.sources)
    try:
        tree = st.api.tree("/", recursive=True)
        via_api: Listing | None = api_listing(tree["entry"])
        note = ""
    except (ApiError, httpx.HTTPError) as exc:
        via_api, note = None, str(exc)
    via_mount: Listing | None = None
    if st.mnt is not None:
        try:
            via_mount = find_listing(st.mnt)
        except OSError as exc:
            note += f"\nfind over the mount failed: {exc}"
    return expected, via_api, via_mount, note


def differences(st: Setup) -> list[str]:
    expected, via_api, via_mount, note = snapshot_state(st)
    out: list[str] = []
    if via_api is None:
        out.append(f"API tree unavailable: {note}")
    else:
        out += diff(expected, via_api, label="api")
    if st.mnt is not None:
        if via_mount is None:
            out.append(f"mount listing unavailable: {note}")
        else:
            out += diff(expected, via_mount, label="mount")
    return out


def wait_converged(st: Setup, timeout: float = 40.0, *, what: str = "") -> None:
    """Poll until API tree and mount equal the union of the sources; else fail with a diff."""
    deadline = time.monotonic() + timeout
    while True:
        lines = differences(st)
        if not lines:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    seed = st.mix.seed if st.mix else None
    ops = "\n".join(st.mix.log[-80:]) if st.mix else ""
    try:
        stats = dump_json(st.api.stats())
    except Exception as exc:  # the report must still come out
        stats = repr(exc)
    raise AssertionError(
        f"view did not converge{' ' + what if what else ''} within {timeout:.0f}s "
        f"(FUSTOR_E2E_SEED={seed})\n" + "\n".join(lines)
        + f"\n--- last operations:\n{ops}\n--- /stats:\n{stats}")
