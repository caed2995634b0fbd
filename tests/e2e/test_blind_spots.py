"""Blind spots on one machine: the agent watches a bindfs view while the test writes to the real
directory underneath (like a write from another NFS client). Such changes must still reach the
view, through audits (incremental for new names, full for in-place changes) and realtime find
(API and mount lookups)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from e2e_harness import ProcGroup, wait_until
from e2e_setup import pipes, standard

pytestmark = pytest.mark.fuse


def _meta(st, path: str) -> dict | None:  # type: ignore[no-untyped-def]
    r = st.api.get("metadata", path=path)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()["entry"]  # type: ignore[no-any-return]


def test_blind_additions_and_deletions_reach_view_by_audit(group: ProcGroup) -> None:
    st = standard(group, mount=False)
    real = st.sources[1].real
    (real / "dir1" / "blind_new.dat").write_bytes(b"n" * 123)
    (real / "blind_dir" / "inner").mkdir(parents=True)
    (real / "blind_dir" / "inner" / "f.dat").write_bytes(b"f")
    os.unlink(real / "dir2" / "sub0" / "data_0003.dat")

    wait_until(lambda: (_meta(st, "/dir1/blind_new.dat") or {}).get("size") == 123, 30,
               "a blind new file to appear after an audit")
    wait_until(lambda: _meta(st, "/blind_dir/inner/f.dat") is not None, 30,
               "a blind new directory tree to appear after an audit")
    # src1 has the same file, so the deleted copy only loses its pipe-2 source.
    wait_until(lambda: (_meta(st, "/dir2/sub0/data_0003.dat") or {}).get("sources") == ["pipe-1"],
               30, "a blind deletion to drop pipe-2 from the entry's sources")
    entry = _meta(st, "/dir1/blind_new.dat")
    assert entry is not None and entry["blind_spot"] == "added", entry
    spots = st.api.json("blind-spots")
    added = {a["path"] for a in spots["additions"]}
    deleted = {d["path"] for d in spots["deletions"]}
    assert "/dir1/blind_new.dat" in added, spots
    assert "/dir2/sub0/data_0003.dat" in deleted, spots

    # A change seen by inotify (through the bindfs view) clears the blind-spot mark.
    with open(st.sources[1].watched / "dir1" / "blind_new.dat", "ab") as f:
        f.write(b"more")
    wait_until(lambda: (_meta(st, "/dir1/blind_new.dat") or {}).get("blind_spot") is None, 15,
               "a realtime event to clear the blind-spot mark")


def test_realtime_find_reveals_blind_file_before_any_audit(group: ProcGroup) -> None:
    st = standard(group, mount=False, pipe_specs=pipes(audit=600, full=6000, sentinel=600))
    real = st.sources[1].real
    (real / "dir3" / "hidden.dat").write_bytes(b"h" * 77)
    time.sleep(1.0)
    assert _meta(st, "/dir3/hidden.dat") is None, "no audit should have run yet"

    r = st.api.get("tree", path="/dir3", force_real_time=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("find_pending") is True and body.get("job_id"), body
    job_id = body["job_id"]

    def done() -> dict | None:  # type: ignore[type-arg]
        job = st.api.mgmt(f"jobs/{job_id}")
        return job if job["state"] in ("done", "failed") else None

    job = wait_until(done, 20, f"job {job_id} to finish")
    assert job["state"] == "done", job
    assert job["path"] == "/dir3", job
    assert job["agents"], job
    assert any(j["job_id"] == job_id for j in st.api.mgmt("jobs")["jobs"])
    entry = _meta(st, "/dir3/hidden.dat")
    assert entry is not None and entry["size"] == 77, entry


def test_mount_lookup_of_blind_file_triggers_realtime_find(group: ProcGroup) -> None:
    st = standard(group, pipe_specs=pipes(audit=600, full=6000, sentinel=600))
    assert st.mnt is not None
    real = st.sources[1].real
    (real / "dir4" / "fresh.dat").write_bytes(b"q" * 55)
    target = st.mnt / "dir4" / "fresh.dat"

    def visible() -> os.stat_result | None:
        try:
            return os.stat(target)
        except FileNotFoundError:
            return None

    stat = wait_until(visible, 15, "a lookup on the mount to find a blind file", interval=0.2)
    assert stat.st_size == 55


def test_full_audit_refreshes_in_place_blind_changes(group: ProcGroup) -> None:
    """Issue 7: append, truncate and `touch -d` underneath the bindfs layer change neither the
    directory's mtime nor any inotify watch; the next full audit must still show them."""
    st = standard(group, mount=False, pipe_specs=pipes(audit=1.0, full=3.0, sentinel=600))
    real: Path = st.sources[1].real
    # Files only pipe-2 holds: for a path in both pipes the view shows the newest copy.
    (st.sources[1].watched / "only2").mkdir()
    for name in ("grown.dat", "shrunk.dat", "aged.dat"):
        (st.sources[1].watched / "only2" / name).write_bytes(b"=" * 100)
    wait_until(lambda: _meta(st, "/only2/aged.dat") is not None, 15, "the files in the view")
    grown, shrunk, aged = (real / "only2" / n for n in ("grown.dat", "shrunk.dat", "aged.dat"))
    # After the first audit (which lists everything), incremental audits skip only2/: the
    # changes below leave its mtime alone, so only a full audit can find them.
    wait_until(lambda: (st.api.stats()["pipes"]["pipe-2"].get("audits") or {}).get("incremental"),
               15, "the first audit of pipe-2")
    t_mod = time.time()
    with open(grown, "ab") as f:
        f.write(b"+" * 1000)
    os.truncate(shrunk, 3)
    subprocess.run(["touch", "-d", "2001-02-03 04:05:06.789", str(aged)], check=True)
    want = {p: os.stat(p) for p in (grown, shrunk, aged)}

    stale: list[str] = []

    def refreshed() -> bool:
        stale.clear()
        for p, s in want.items():
            e = _meta(st, "/" + str(p.relative_to(real)))
            if e is None or e["size"] != s.st_size or abs(e["mtime"] - s.st_mtime) > 1e-6:
                got = None if e is None else (e["size"], e["mtime"])
                stale.append(f"{p.name}: api {got} != source {(s.st_size, s.st_mtime)}")
        return not stale

    try:
        wait_until(refreshed, 30, "a full audit to show blind append/truncate/touch -d")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(stale)) from None
    # (An incremental audit or the sentinel may have been quicker.) After the next full audit
    # the values still hold, and that audit's cost is reported.
    def full_after() -> dict | None:  # type: ignore[type-arg]
        full = _find_full_audit(st.api.stats()["pipes"]["pipe-2"])
        return full if full and full.get("finished_at", 0) >= t_mod else None

    try:
        full = wait_until(full_after, 20, "a full audit of pipe-2 after the changes")
    except AssertionError as exc:
        pipe = st.api.stats()["pipes"]["pipe-2"]
        raise AssertionError(f"{exc}\n{json.dumps(pipe, indent=1)}") from None
    assert refreshed(), stale
    assert full.get("entries", 0) >= 3 and full.get("duration_sec") is not None, full


def _find_full_audit(pipe: dict) -> dict | None:  # type: ignore[type-arg]
    audits = pipe.get("audits") or {}
    for key in ("full", "last_full", "full_audit", "last_full_audit"):
        if isinstance(audits.get(key), dict):
            return audits[key]  # type: ignore[no-any-return]
    return None
