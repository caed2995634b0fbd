"""Fusion-core figures: RSS per entry and rows/s of View.apply, plus query latencies.

Not a test (speed belongs to `make bench`): `.venv/bin/python tests/server/fusion_measure.py
[ENTRIES] [PIPES] [NAME_LEN]`. Prints one line per figure; bench code may call `measure()`.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fusion_rows import synthetic_snapshot  # noqa: E402

from fustor.config import ViewConfig  # noqa: E402
from fustor.protocol import Attrs, Upsert  # noqa: E402
from fustor_fusion.view import View  # noqa: E402


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _ms(f: Callable[[], object], k: int) -> float:
    t = time.perf_counter()
    for _ in range(k):
        f()
    return (time.perf_counter() - t) / k * 1e3


def measure(n: int = 1_000_000, pipes: int = 1, name_len: int = 13) -> dict[str, Any]:
    """Build `n` entries per pipe (snapshot rows, chunks of 2000) and time a few queries."""
    v = View(ViewConfig(id="v"), [f"p{i}" for i in range(pipes)])
    gc.collect()
    base = rss()
    apply_sec = 0.0
    for p in range(pipes):
        rows = synthetic_snapshot(n, name_len=name_len)
        while chunk := list(itertools.islice(rows, 2000)):
            t0 = time.perf_counter()
            v.apply(f"p{p}", chunk)
            apply_sec += time.perf_counter() - t0
    gc.collect()
    out: dict[str, Any] = {
        "entries": v.stats()["entries"], "pipes": pipes,
        "snapshot_rows_per_sec": round(n * pipes / apply_sec),
        "rss_bytes_per_entry": round((rss() - base) / (n * pipes)),
    }
    cur: list[str | None] = [None]

    def page() -> None:
        cur[0] = v.tree("/", recursive=False, limit=100, cursor=cur[0])[1]
    out["ms_node"] = _ms(lambda: v.node("/d00005"), 100)
    out["ms_list_1000_children"] = _ms(lambda: v.tree("/d00005", recursive=False), 20)
    out["ms_page_of_100"] = _ms(page, 20)
    out["ms_stats"] = _ms(v.stats, 100)
    out["ms_search_name_limit_1000"] = _ms(lambda: v.search("*.dat", limit=1000), 5)
    out["ms_search_full_walk"] = _ms(lambda: v.search("nomatch*"), 1)
    now = time.time()
    rt = [Upsert(path=f"/d{i % 1000:05d}/rt{i}", attrs=Attrs("file", i, now, now, 0o644, 0, 0),
                 write="complete") for i in range(100_000)]
    t0 = time.perf_counter()
    for i in range(0, len(rt), 2000):
        v.apply("p0", rt[i:i + 2000])
    out["realtime_rows_per_sec"] = round(len(rt) / (time.perf_counter() - t0))
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    for k, val in measure(*args).items():
        print(f"{k}: {val:.3f}" if isinstance(val, float) else f"{k}: {val}")
