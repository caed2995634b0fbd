"""`make bench`: every figure of the Fusion, agent and mount issues, each beside a baseline
measured in the same run (`find` on the source, a plain Python walk), with its target.

    python bench/run.py [--entries N] [--work DIR] [--runs 3]

N defaults to $BENCH_ENTRIES or 100000. Real processes started through the CLIs
(`fustor-fusion start --config`, `fustor-agent start --config`, `fustor-mount`) with FUSTOR_HOME
in a temp dir and free ports. Prints a table and writes bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from e2e_harness import (  # noqa: E402
    BIN,
    Api,
    Cluster,
    PipeSpec,
    ProcGroup,
    bindfs_mount,
    bindfs_unmount,
    wait_until,
)
from gen_tree import TreeInfo, generate  # noqa: E402
from measure import Figure, machine, median, pct, repeat, run_quiet, table, timed  # noqa: E402

VIEW, VKEY = "bench-view", "bench-key"
IVIEW, IKEY = "ingest", "ingest-key"
BATCH = 10_000
LIVE = "bench-live"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- baselines
def find_printf(*roots: str) -> None:
    run_quiet(["find", *roots, "-printf", r"%p %s %T@\n"])


def count_entries(roots: list[str]) -> int:
    out = subprocess.run(["find", *roots, "-printf", "."], capture_output=True, check=True)
    return len(out.stdout)


def python_walk(root: str) -> int:
    n = 0
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                e.stat(follow_symlinks=False)
                n += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return n


# ---------------------------------------------------------------------------- ingest
def snapshot_bodies(root: str) -> tuple[list[bytes], int]:
    """A snapshot of `root` as protocol batches (what a leader sends), encoded up front."""
    rows: list[str] = ['{"op":"scan_start","scan":"bench","kind":"snapshot","path":"/",'
                       '"recursive":true}']
    q = json.dumps
    for top, dirs, files in os.walk(root):
        rel = top[len(root):] or "/"
        pm = os.lstat(top).st_mtime
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            path = (rel.rstrip("/") + "/" + name)
            kind = "dir" if name in dirs else "file"
            rows.append(
                f'{{"op":"upsert","path":{q(path)},"scan":"bench","type":"{kind}",'
                f'"size":{st.st_size},"mtime":{st.st_mtime!r},"ctime":{st.st_ctime!r},'
                f'"mode":{st.st_mode & 0o7777},"uid":{st.st_uid},"gid":{st.st_gid},'
                f'"parent_mtime":{pm!r}}}')
        rows.append(f'{{"op":"dir_done","scan":"bench","path":{q(rel)},"skipped":false}}')
    entries = sum(1 for r in rows if r.startswith('{"op":"upsert"'))
    rows.append(f'{{"op":"scan_end","scan":"bench","ok":true,"entries":{entries},"errors":0}}')
    bodies = []
    for seq, i in enumerate(range(0, len(rows), BATCH), start=1):
        bodies.append(f'{{"seq":{seq},"events":[{",".join(rows[i:i + BATCH])}]}}'.encode())
    return bodies, len(rows)


def ingest(receiver_url: str, key: str, bodies: list[bytes]) -> float:
    """Open a session, send every batch over one connection; seconds from first to last."""
    with httpx.Client(base_url=receiver_url, timeout=120.0, headers={"X-API-Key": key}) as c:
        r = c.post("/api/v1/pipe/sessions", json={
            "agent_id": f"bench-{key}", "host": "bench", "source_uri": "/bench",
            "capabilities": ["snapshot"], "version": "0.9.0"})
        r.raise_for_status()
        sid = r.json()["session_id"]
        t0 = time.perf_counter()
        for body in bodies:
            r = c.post(f"/api/v1/pipe/sessions/{sid}/events", content=body,
                       headers={"Content-Type": "application/json"})
            if r.status_code != 200:
                raise RuntimeError(f"ingest refused: {r.status_code} {r.text[:300]}")
        return time.perf_counter() - t0


class QueryLoad(threading.Thread):
    """Metadata queries in a loop, latencies recorded, until stopped."""

    def __init__(self, api_url: str, paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.api_url, self.paths = api_url, paths
        self.lat: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.api_url, timeout=30.0, headers={"X-API-Key": VKEY}) as c:
            i = 0
            while not self.stop.is_set():
                p = self.paths[i % len(self.paths)]
                i += 1
                t0 = time.perf_counter()
                r = c.get(f"/api/v1/views/{VIEW}/metadata", params={"path": p})
                self.lat.append(time.perf_counter() - t0)
                r.raise_for_status()
                time.sleep(0.002)


# ---------------------------------------------------------------------------- helpers
def query_lat(api: Api, endpoint: str, n: int, **params: Any) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = api.get(endpoint, **params)
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{endpoint} {params}: {r.status_code} {r.text[:300]}")
    return out


def pipe_state(api: Api, pipe: str) -> str | None:
    r = api.get("stats", allow_partial=True)
    if r.status_code != 200:
        return None
    return (r.json().get("pipes", {}).get(pipe) or {}).get("state")


def visible_latency(api: Api, root: Path, *, rate: int, seconds: float) -> list[float]:
    """Create `rate` files/s for `seconds`; per file, the time until the API lists it."""
    live = root / LIVE
    shutil.rmtree(live, ignore_errors=True)
    per_dir = 100
    ndirs = int(rate * seconds) // per_dir + 1
    live.mkdir()
    for d in range(ndirs):
        (live / f"d{d:03d}").mkdir()
    wait_until(lambda: api.get("metadata", path=f"/{LIVE}/d{ndirs - 1:03d}").status_code == 200,
               60, "the live directories to be visible")
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def writer() -> None:
        t0 = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = t0 + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            name = f"d{i // per_dir:03d}/f{i:06d}"
            with open(live / name, "wb"):
                pass
            created[name] = time.perf_counter()
        done.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    deadline = time.perf_counter() + seconds + 30
    while time.perf_counter() < deadline:
        pending = {n.split("/")[0] for n in created if n not in seen}
        if done.is_set() and not pending:
            break
        for d in sorted(pending):
            r = api.get("tree", path=f"/{LIVE}/{d}", recursive=False, only_path=True)
            now = time.perf_counter()
            if r.status_code == 200:
                for c in r.json()["entry"].get("children") or []:
                    seen.setdefault(f"{d}/{c['name']}", now)
        time.sleep(0.005)
    t.join()
    lost = [n for n in created if n not in seen]
    if lost:
        log(f"change->visible: {len(lost)} of {len(created)} files never became visible")
    return [seen[n] - created[n] for n in created if n in seen] + [float("inf")] * len(lost)


def stat_loop(path: str, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        os.stat(path)
    return (time.perf_counter() - t0) / n


# ---------------------------------------------------------------------------- main
def bench(entries: int, work: Path, runs: int) -> tuple[list[Figure], dict[str, Any]]:
    figs: list[Figure] = []
    extra: dict[str, Any] = {}
    work.mkdir(parents=True, exist_ok=True)
    log(f"tree of {entries} entries under {work}")
    info: TreeInfo = generate(work / f"tree-{entries}", entries)
    root = info.root
    shutil.rmtree(Path(root) / LIVE, ignore_errors=True)
    n = info.entries
    extra["tree"] = {k: v for k, v in info.__dict__.items() if k != "sample"}

    log("baselines: find -printf, python walk")
    find_printf(root)  # warm the dentry/inode caches: every figure below runs warm
    t_find = median(repeat(lambda: find_printf(root), runs))
    t_walk = median(repeat(lambda: python_walk(root), runs))
    find_rate, walk_rate = n / t_find, n / t_walk
    extra["baselines"] = {"find_printf_sec": t_find, "python_walk_sec": t_walk}

    log("agent scanner into a null sink")
    scan_runs = []
    for _ in range(runs):
        out = subprocess.run([str(BIN / "python"), "-m", "fustor.agent.scanner", root],
                             capture_output=True, text=True, check=True).stdout
        kv = dict(p.split("=", 1) for p in out.split())
        scan_runs.append(float(kv["elapsed"].rstrip("s")))
    t_scan = median(scan_runs)
    figs.append(Figure("Agent", "snapshot scan rate (null sink)", n / t_scan, "entries/s",
                       ">= 200000", find_rate, "find -printf", [n / t for t in scan_runs]))
    figs.append(Figure("Agent", "snapshot scan time vs find -printf", t_scan, "s",
                       "<= 2x baseline", t_find, "find -printf", scan_runs))

    log("encoding the snapshot batches")
    bodies, rows = snapshot_bodies(root)

    group = ProcGroup(Path(tempfile.mkdtemp(prefix="fustor-bench-", dir=work)))
    try:
        pipes = [PipeSpec("p-main", "k-main", 3600, 86400, 3600, views=(VIEW,)),
                 PipeSpec("p-blind", "k-blind", 3600, 86400, 3600, views=(VIEW,))]
        # Ingest runs: each into a view of its own (one agent's snapshot, as in a deployment);
        # the run under query load goes into the first one's view, which already holds the
        # same tree from another pipe (the union's worst case: every path in both).
        ingest_views = {f"{IVIEW}-{i}": [f"{IKEY}-{i}"] for i in range(1, runs + 1)}
        pipes += [PipeSpec(f"p-ing{i}", f"k-ing{i}", 3600, 86400, 3600, views=(f"{IVIEW}-{i}",))
                  for i in range(1, runs + 1)]
        pipes.append(PipeSpec("p-load", "k-load", 3600, 86400, 3600, views=(f"{IVIEW}-1",)))
        cluster = Cluster(group, pipes)
        log("starting Fusion")
        fusion = cluster.start_fusion(session_timeout=120.0, views={VIEW: [VKEY], **ingest_views},
                                      max_tree_items=max(200_000, 3 * n), level="WARNING")
        api = Api(cluster.api_url, VIEW, VKEY)
        group.defer(api.close)

        # -- Fusion ingest (run 1 on an idle Fusion: rate and memory per entry)
        rss0 = fusion.rss()
        log(f"ingest run 1: {rows} rows in {len(bodies)} batches")
        ingest_runs = [rows / ingest(cluster.receiver_url, "k-ing1", bodies)]
        time.sleep(1.0)
        rss1 = fusion.rss()
        extra["fusion_rss"] = {"idle": rss0, "after_1_pipe": rss1}
        for i in range(2, runs + 1):
            log(f"ingest run {i}")
            ingest_runs.append(rows / ingest(cluster.receiver_url, f"k-ing{i}", bodies))

        # -- agents: initial sync, RSS
        blind_real = work / "blind-src"
        shutil.rmtree(blind_real, ignore_errors=True)
        (blind_real / "blindsub").mkdir(parents=True)
        for i in range(20):
            (blind_real / "blindsub" / f"seed_{i}.dat").write_bytes(b"s" * i)
        blind_view = group.base / "blind-view"
        bindfs_mount(blind_real, blind_view)
        group.defer(lambda: bindfs_unmount(blind_view))
        blind_agent = cluster.start_agent(blind_view, "k-blind", name="agent-blind")
        wait_until(lambda: pipe_state(api, "p-blind") == "ready", 60, "the blind pipe's snapshot")
        log("initial sync of the tree")
        t0 = time.perf_counter()
        agent = cluster.start_agent(root, "k-main", name="agent-main")
        wait_until(lambda: pipe_state(api, "p-main") == "ready", 900, "the main snapshot",
                   interval=0.05)
        t_sync = time.perf_counter() - t0
        figs.append(Figure("Agent", "initial sync (agent start -> snapshot complete)", t_sync,
                           "s", f"<= {20 * max(1, n / 1e6):g}", t_find, "find -printf",
                           note="target 20 s at 1M, scaled by entries"))
        time.sleep(1.0)
        a_rss, b_rss = agent.rss(), blind_agent.rss()
        figs.append(Figure("Agent", "agent RSS per entry ((RSS - idle agent RSS) / entries)",
                           (a_rss - b_rss) / n, "B/entry", "", a_rss / n, "total RSS / entries"))

        # -- Fusion queries
        sample = info.sample[:1000] or ["/upload"]
        wide1k = info.wide["1000"]
        log("queries: tree, metadata, glob")
        query_lat(api, "tree", 20, path=wide1k, recursive=False)
        lt = query_lat(api, "tree", 200, path=wide1k, recursive=False)
        src_ls = repeat(lambda: [e.stat(follow_symlinks=False) for e in os.scandir(root + wide1k)],
                        200)
        figs.append(Figure("Fusion", "tree of a 1,000-entry dir, non-recursive, p50", median(lt),
                           "s", "<= 0.005", median(src_ls), "scandir+lstat", lt,
                           note=f"p99 {pct(lt, 99) * 1000:.2f} ms"))
        lm = [timed(lambda p=p: api.get("metadata", path=p).raise_for_status()) for p in sample]
        src_st = [timed(lambda p=p: os.lstat(root + p)) for p in sample]
        figs.append(Figure("Fusion", "metadata p50", median(lm), "s", "<= 0.002", median(src_st),
                           "os.lstat", lm, note=f"p99 {pct(lm, 99) * 1000:.2f} ms"))
        glob = "*_9999.dat"
        lg = [timed(lambda: api.get("search", pattern=glob, limit=100000).raise_for_status())
              for _ in range(runs)]
        lf = repeat(lambda: run_quiet(["find", root, "-name", glob]), runs)
        figs.append(Figure("Fusion", f"name glob over all entries ({glob})", median(lg), "s",
                           "<= 1.0", median(lf), "find -name", lg))

        # -- one more ingest with queries running: p99 during ingest vs idle
        idle = QueryLoad(cluster.api_url, sample)
        idle.start()
        time.sleep(3.0)
        idle.stop.set()
        idle.join()
        busy = QueryLoad(cluster.api_url, sample)
        busy.start()
        log("ingest with queries, into a view holding the same tree")
        loaded = rows / ingest(cluster.receiver_url, "k-load", bodies)
        busy.stop.set()
        busy.join()
        figs.insert(0, Figure("Fusion", "snapshot ingest over HTTP, one connection",
                              median(ingest_runs), "rows/s", ">= 100000", find_rate,
                              "find -printf entries/s", ingest_runs,
                              note="each run into a view of its own, no queries"))
        figs.insert(1, Figure("Fusion", "resident memory per entry (RSS growth / entries)",
                              (rss1 - rss0) / n, "B/entry", "<= 250", None, "", []))
        figs.append(Figure("Fusion", "metadata p99 during snapshot ingest", pct(busy.lat, 99),
                           "s", "<= 0.05", pct(idle.lat, 99), "idle p99",
                           note=f"{len(busy.lat)} queries during ingest"))
        figs.append(Figure("Fusion", "ingest with those queries, into a view already holding "
                           "the same tree from another pipe", loaded, "rows/s", "",
                           median(ingest_runs), "ingest, own view, no queries",
                           note=f"{len(busy.lat) / (rows / loaded):.0f} queries/s meanwhile"))

        # -- change -> visible at 1,000 changes/s
        log("change -> visible at 1000 changes/s")
        lat = visible_latency(api, Path(root), rate=1000, seconds=5.0)
        figs.append(Figure("Agent", "change -> visible in API p99 at 1,000 changes/s",
                           pct(lat, 99), "s", "<= 1.0", t_find, "one find pass",
                           [], note=f"p50 {pct(lat, 50) * 1000:.1f} ms, {len(lat)} files"))

        # -- mount
        log("mount")
        mnt = group.base / "mnt"
        cluster.start_mount(mnt, view=VIEW, key=VKEY)
        # Above 300k entries the passes cover a quarter of the tree (upload/submit/00..03), so
        # a slow mount cannot push `make bench` past its 10 minutes; the baseline is the same.
        scope = [""] if n <= 300_000 else [f"/upload/submit/{c:02x}" for c in range(4)]
        m_roots = [str(mnt) + s for s in scope]
        s_roots = [root + s for s in scope]
        m_n = count_entries(s_roots)
        t_cold = timed(lambda: find_printf(*m_roots))
        tm = repeat(lambda: find_printf(*m_roots), 1 if n > 300_000 else runs)
        tms = repeat(lambda: find_printf(*s_roots), runs)
        where = "whole tree" if n <= 300_000 else f"{m_n:,} entries under upload/submit/00..03"
        figs.append(Figure("Mount", "find MNT -printf, second pass", m_n / median(tm),
                           "entries/s", ">= 150000", m_n / median(tms), "find on source",
                           [m_n / t for t in tm],
                           note=f"{where}; first (cold) pass {m_n / t_cold:,.0f} entries/s"))
        # The same passes over a C FUSE filesystem (bindfs, passthrough, same cache timeouts
        # as the mount's maximum): what any FUSE filesystem costs per directory on this
        # machine (four kernel round trips: opendir, readdir, readdir at the end, releasedir).
        bmnt = group.base / "bindfs"
        bmnt.mkdir()
        subprocess.run(["bindfs", "-o", "attr_timeout=60,entry_timeout=60", root, str(bmnt)],
                       check=True, capture_output=True)
        try:
            b_roots = [str(bmnt) + s for s in scope]
            find_printf(*b_roots)
            tb = repeat(lambda: find_printf(*b_roots), 1 if n > 300_000 else runs)
        finally:
            bindfs_unmount(bmnt)
        figs.append(Figure("Mount", "find over bindfs (C FUSE passthrough), second pass",
                           m_n / median(tb), "entries/s", "", m_n / median(tm),
                           "find MNT, second pass", [m_n / t for t in tb],
                           note="the FUSE round trips alone, without Fusion or Python"))
        wide10k = info.wide["10000"]
        run_quiet(["ls", "-l", str(mnt) + wide10k])
        tl = repeat(lambda: run_quiet(["ls", "-l", str(mnt) + wide10k]), runs)
        tls = repeat(lambda: run_quiet(["ls", "-l", root + wide10k]), runs)
        figs.append(Figure("Mount", "ls -l of a 10k-entry dir", median(tl), "s", "<= 0.3",
                           median(tls), "ls -l on source", tl))
        cached = str(mnt) + sample[0]
        os.stat(cached)
        ts = [stat_loop(cached, 20000) for _ in range(runs)]
        tss = [stat_loop(root + sample[0], 20000) for _ in range(runs)]
        figs.append(Figure("Mount", "repeated stat of a cached entry", median(ts), "s",
                           "<= 0.00001", median(tss), "stat on source", ts))
        rt = []
        for i in range(20):
            name = f"blindsub/blind_{i}.dat"
            (blind_real / name).write_bytes(b"b")
            t0 = time.perf_counter()
            wait_until(lambda name=name: os.path.exists(mnt / name), 30,
                       f"{name} through a realtime find", interval=0.005)
            rt.append(time.perf_counter() - t0)
        figs.append(Figure("Mount", "realtime-find lookup of a blind file, p95", pct(rt, 95),
                           "s", "<= 1.0", t_find, "one find pass", rt,
                           note=f"p50 {median(rt) * 1000:.0f} ms over {len(rt)} files"))
    finally:
        try:
            group.close()
        except Exception as exc:
            log(f"cleanup: {exc!r}")
        shutil.rmtree(Path(root) / LIVE, ignore_errors=True)
        if os.environ.get("BENCH_KEEP_LOGS"):
            log(f"logs kept in {group.base}")
        else:
            shutil.rmtree(group.base, ignore_errors=True)
    extra["baseline_rates"] = {"find_printf": find_rate, "python_walk": walk_rate}
    figs.append(Figure("Baseline", "find -printf over the source", find_rate, "entries/s"))
    figs.append(Figure("Baseline", "plain Python walk (scandir + lstat)", walk_rate, "entries/s"))
    return figs, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=int(os.environ.get("BENCH_ENTRIES") or 100_000))
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK") or "/var/tmp/fustor-bench",
                    help="where the generated tree (reused between runs) and temp homes live")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (medians)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    figs, extra = bench(args.entries, Path(args.work), max(1, args.runs))
    elapsed = time.monotonic() - t0
    print(f"\nFustor bench: {args.entries:,} entries requested, {extra['tree']['entries']:,} "
          f"in the tree, medians of {args.runs} runs, {elapsed:.0f}s\n")
    print(table(figs))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out) / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "timestamp": stamp, "entries": args.entries, "runs": args.runs, "elapsed_sec": elapsed,
        "machine": machine(), "figures": [f.to_json() for f in figs], **extra,
    }, indent=1, default=str))
    print(f"\nwritten: {out}")
    failed = [f.name for f in figs if f.ok is False]
    if failed:
        print(f"{len(failed)} figure(s) miss their target: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
