"""The Fusion figures of bench/run.py, on their own: snapshot ingest over HTTP from one
connection (run 1 idle, runs 2.. with metadata queries in a loop and their p50/p99), and after
run 1 the p50 of `tree` of a 1,000-entry directory, metadata p50 and the name glob.

Not a test (speed belongs to `make bench`): `.venv/bin/python tests/server/fusion_bench.py
[TREE_ROOT] [RUNS]`; TREE_ROOT (default /var/tmp/fustor-bench/tree-100000, a bench tree) is
read once into protocol batches of 10,000 rows, agent-shaped like bench/run.py's. Fusion runs in
a child process (tests/server/fusion_ingest.py's config: one view fed by 8 pipes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fusion_ingest import BATCH, _free_port  # noqa: E402


def tree_bodies(root: str) -> tuple[list[bytes], int, str, list[str]]:
    """(batches, rows, a directory of about 1,000 entries, some file paths) for `root`."""
    q = json.dumps
    rows = ['{"op":"scan_start","scan":"b","kind":"snapshot","path":"/","recursive":true}']
    wide, wide_n, sample = "/", 0, []
    for top, dirs, files in os.walk(root):
        rel = top[len(root):] or "/"
        pm = os.lstat(top).st_mtime
        if abs(len(dirs) + len(files) - 1000) < abs(wide_n - 1000):
            wide, wide_n = rel, len(dirs) + len(files)
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            path = rel.rstrip("/") + "/" + name
            if name in files and len(sample) < 1000:
                sample.append(path)
            rows.append(
                f'{{"op":"upsert","path":{q(path)},"scan":"b",'
                f'"type":"{"dir" if name in dirs else "file"}","size":{st.st_size},'
                f'"mtime":{st.st_mtime!r},"ctime":{st.st_ctime!r},"mode":{st.st_mode & 0o7777},'
                f'"uid":{st.st_uid},"gid":{st.st_gid},"parent_mtime":{pm!r}}}')
        rows.append(f'{{"op":"dir_done","scan":"b","path":{q(rel)},"skipped":false}}')
    rows.append(f'{{"op":"scan_end","scan":"b","ok":true,"entries":{len(rows) - 1},"errors":0}}')
    bodies = [f'{{"seq":{s},"events":[{",".join(rows[i:i + BATCH])}]}}'.encode()
              for s, i in enumerate(range(0, len(rows), BATCH), start=1)]
    return bodies, len(rows), wide, sample


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def main(root: str, runs: int = 3) -> None:
    bodies, rows, wide, sample = tree_bodies(root)
    api, rx = _free_port(), _free_port()
    srv = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fusion_ingest.py")),
                            "--serve", str(api), str(rx)], stdout=subprocess.PIPE)
    q = httpx.Client(base_url=f"http://127.0.0.1:{api}", timeout=60, headers={"X-API-Key": "read"})

    def get(ep: str, **params: object) -> float:
        t0 = time.perf_counter()
        q.get(f"/api/v1/views/v/{ep}", params={**params, "allow_partial": "true"}
              ).raise_for_status()
        return time.perf_counter() - t0

    def ingest(run: int) -> float:
        with httpx.Client(base_url=f"http://127.0.0.1:{rx}", timeout=120,
                          headers={"X-API-Key": f"k{run}"}) as c:
            sid = c.post("/api/v1/pipe/sessions", json={"agent_id": f"b{run}"}).json()
            t0 = time.perf_counter()
            for b in bodies:
                c.post(f"/api/v1/pipe/sessions/{sid['session_id']}/events", content=b,
                       headers={"Content-Type": "application/json"}).raise_for_status()
            return rows / (time.perf_counter() - t0)

    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
        rates = [ingest(0)]
        for _ in range(20):
            get("tree", path=wide, recursive="false")
        lt = [get("tree", path=wide, recursive="false") for _ in range(200)]
        lm = [get("metadata", path=p) for p in sample]
        lg = [get("search", pattern="*_9999.dat", limit=100000) for _ in range(3)]
        lat: list[float] = []
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                lat.append(get("metadata", path=sample[i % len(sample)]))
                i += 1
                time.sleep(0.002)
        th = threading.Thread(target=load, daemon=True)
        th.start()
        rates += [ingest(run) for run in range(1, runs)]
        stop.set()
        th.join()
        print(f"ingest rows/s per run: {[round(r) for r in rates]} ({rows} rows)")
        print(f"tree of {wide} non-recursive p50 {_pct(lt, 50) * 1e3:.2f} ms; metadata p50 "
              f"{_pct(lm, 50) * 1e3:.2f} ms; glob *_9999.dat {_pct(lg, 50):.3f} s")
        print(f"metadata during ingest runs 2..: p50 {_pct(lat, 50) * 1e3:.1f} ms, p99 "
              f"{_pct(lat, 99) * 1e3:.1f} ms ({len(lat)} queries)")
    finally:
        q.close()
        srv.kill()
        srv.wait()


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0] if a else "/var/tmp/fustor-bench/tree-100000", int(a[1]) if len(a) > 1 else 3)
