"""Initial sync, measured alone: a real Fusion and one agent on loopback, time from agent
start to the pipe's state "ready" (what `bench/run.py` reports), with each process's CPU
seconds so runs on a busy machine can be compared by CPU per row as well as by wall time.

    .venv/bin/python tests/agent/sync_bench.py ROOT [--runs 3] [--batch-size N]

Not a test (pytest collects test_*.py only). Prints one line per run and the agent's log
lines about the watch installation and the scans.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_harness import Api, Cluster, PipeSpec, Proc, ProcGroup, command, wait_until  # noqa: E402

VIEW, VKEY = "sync-view", "sync-key"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def pipe_state(api: Api, pipe: str) -> str | None:
    r = api.get("stats", allow_partial=True)
    if r.status_code != 200:
        return None
    return (r.json().get("pipes", {}).get(pipe) or {}).get("state")


def start_agent(group: ProcGroup, cluster: Cluster, root: str, key: str, name: str,
                batch_size: int | None) -> Proc:
    home = group.base / f"{name}-home"
    home.mkdir(parents=True, exist_ok=True)
    params: dict[str, object] = {"coalesce_sec": 0.05}
    if batch_size:
        params["batch_size"] = batch_size
    cfg = home / "agent.yaml"
    cfg.write_text(yaml.safe_dump({
        "agent_id": f"sync-{name}",
        "logging": {"level": "INFO"},
        "sources": {"src": {"driver": "fs", "uri": root, "driver_params": params}},
        "senders": {"fusion": {"driver": "fusion", "uri": cluster.receiver_url,
                               "credential": {"key": key}, "timeout_sec": 30.0}},
        "pipes": {"sync-job": {"source": "src", "sender": "fusion"}},
    }, sort_keys=False))
    argv = [*command("fustor-agent"), "start", "--config", str(cfg)]
    return group.add(Proc(name, argv, home, group.logdir)).start()


def one_run(root: str, entries: int, batch_size: int | None) -> None:
    group = ProcGroup(Path(tempfile.mkdtemp(prefix="fustor-sync-")))
    try:
        pipe = PipeSpec("p-main", "k-main", 3600, 86400, 3600, views=(VIEW,))
        cluster = Cluster(group, [pipe])
        fusion = cluster.start_fusion(session_timeout=120.0, views={VIEW: [VKEY]},
                                      max_tree_items=max(200_000, 3 * entries), level="WARNING")
        api = Api(cluster.api_url, VIEW, VKEY)
        group.defer(api.close)
        f0 = cpu_seconds(fusion.pid)
        t0 = time.perf_counter()
        agent = start_agent(group, cluster, root, "k-main", "agent", batch_size)
        wait_until(lambda: pipe_state(api, "p-main") == "ready", 900, "the snapshot",
                   interval=0.05)
        took = time.perf_counter() - t0
        a_cpu, f_cpu = cpu_seconds(agent.pid), cpu_seconds(fusion.pid) - f0
        rss = agent.rss()
        print(f"sync={took:.2f}s agent_cpu={a_cpu:.2f}s ({a_cpu / entries * 1e6:.2f} µs/entry) "
              f"fusion_cpu={f_cpu:.2f}s ({f_cpu / entries * 1e6:.2f} µs/entry) "
              f"agent_rss={rss / 2**20:.0f}MiB", flush=True)
        for line in agent.err_path.read_text(errors="replace").splitlines():
            if "watching" in line or " done:" in line or "started" in line:
                print("   ", line[:200])
    finally:
        group.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("root")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="the source's driver_params.batch_size (default: the agent's)")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    entries = sum(len(d) + len(f) for _, d, f in os.walk(root))
    print(f"{root}: {entries} entries", flush=True)
    for _ in range(args.runs):
        one_run(root, entries, args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
