"""Snapshot ingest over HTTP from one connection, the way bench/run.py measures it, on a
synthetic tree: Fusion runs in a child process; batches of 10,000 rows are encoded up front.

Not a test (speed belongs to `make bench`): `.venv/bin/python tests/server/fusion_ingest.py
[ROWS] [cold|hot] [RUNS]`. `hot`: mtimes of a few seconds ago (every file suspect), else old.
Each run feeds a new pipe of the same view (runs after the first merge with equal trees).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BATCH = 10_000
PIPES = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(api_port: int, receiver_port: int) -> None:
    import trio

    from fustor.config import parse_fusion
    from fustor_fusion.service import serve_fusion

    cfg = parse_fusion({
        "host": "127.0.0.1", "port": api_port,
        "receivers": {"r": {"host": "127.0.0.1", "port": receiver_port,
                            "api_keys": [{"key": f"k{i}", "pipe_id": f"p{i}"}
                                         for i in range(PIPES)]}},
        "views": {"v": {"api_keys": ["read"]}},
        "pipes": {f"p{i}": {"receiver": "r", "views": ["v"]} for i in range(PIPES)},
    }, {"": Path("fusion_ingest.yaml")})

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_fusion, cfg)
            print("ready", flush=True)

    trio.run(main)


def bodies(rows: int, hot: bool) -> tuple[list[bytes], int]:
    base = time.time() - 5 if hot else 1_600_000_000.0
    q = json.dumps
    out = ['{"op":"scan_start","scan":"b","kind":"snapshot","path":"/","recursive":true}']
    made = d = 0
    while made < rows:
        dp = f"/dir{d:05d}"
        out.append(f'{{"op":"upsert","path":{q(dp)},"scan":"b","type":"dir","size":4096,'
                   f'"mtime":{base!r},"ctime":{base!r},"mode":493,"uid":0,"gid":0}}')
        made += 1
        for i in range(min(1000, rows - made)):
            m = base + i * 0.0013
            out.append(f'{{"op":"upsert","path":"{dp}/file_{made + i:08d}.dat","scan":"b",'
                       f'"type":"file","size":{4096 + i},"mtime":{m!r},"ctime":{m!r},'
                       f'"mode":420,"uid":1000,"gid":1000,"parent_mtime":{base!r}}}')
        made += min(1000, rows - made)
        out.append(f'{{"op":"dir_done","scan":"b","path":{q(dp)},"skipped":false}}')
        d += 1
    out.append('{"op":"dir_done","scan":"b","path":"/","skipped":false}')
    out.append(f'{{"op":"scan_end","scan":"b","ok":true,"entries":{made},"errors":0}}')
    return [f'{{"seq":{s},"events":[{",".join(out[i:i + BATCH])}]}}'.encode()
            for s, i in enumerate(range(0, len(out), BATCH), start=1)], len(out)


def main(rows: int = 200_000, kind: str = "cold", runs: int = 3) -> list[float]:
    api, rx = _free_port(), _free_port()
    srv = subprocess.Popen([sys.executable, __file__, "--serve", str(api), str(rx)],
                           stdout=subprocess.PIPE)
    rates: list[float] = []
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
        for run in range(min(runs, PIPES)):
            batches, n = bodies(rows, kind == "hot")
            with httpx.Client(base_url=f"http://127.0.0.1:{rx}", timeout=120,
                              headers={"X-API-Key": f"k{run}"}) as c:
                r = c.post("/api/v1/pipe/sessions", json={"agent_id": f"ingest-{run}"})
                sid = r.json()["session_id"]
                t0 = time.perf_counter()
                for b in batches:
                    r = c.post(f"/api/v1/pipe/sessions/{sid}/events", content=b,
                               headers={"Content-Type": "application/json"})
                    r.raise_for_status()
                rates.append(n / (time.perf_counter() - t0))
    finally:
        srv.terminate()
        srv.wait()
    return rates


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        a = sys.argv[1:]
        got = main(int(a[0]) if a else 200_000, a[1] if len(a) > 1 else "cold",
                   int(a[2]) if len(a) > 2 else 3)
        print("rows/s per run:", [round(x) for x in got], f"best {max(got):.0f}")
