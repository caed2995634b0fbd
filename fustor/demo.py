"""`python -m fustor.demo` (`make demo`): Fusion, an agent and the mount on one machine.

Writes a config under the work dir, starts `fustor-fusion`, `fustor-agent` and `fustor-mount` as
child processes, waits for the view, prints what to try, and on Ctrl-C stops all three and
unmounts. `--check` verifies the API and the mount against the source tree and exits instead.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

VIEW, KEY, PUSH_KEY, PIPE = "demo", "demo-key", "demo-push-key", "demo-pipe"
READY_TIMEOUT = 60.0  # start-up of each process; the first snapshot gets --timeout
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_sample_tree(root: Path) -> int:
    """A few hundred files in nested dirs, plus a symlink, an empty dir and odd names.
    Returns the number of entries below `root`. Idempotent."""
    count = 0

    def put(rel: str, text: str) -> None:
        nonlocal count
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            p.write_text(text)
        count += 1

    for project in ("alpha", "beta", "gamma"):
        for stage in ("raw", "processed"):
            for run in range(1, 6):
                for i in range(1, 11):
                    put(f"projects/{project}/{stage}/run-{run:02d}/data_{i:04d}.dat",
                        f"{project} {stage} run {run} sample {i}\n" * i)
    for i in range(1, 21):
        put(f"upload/2026/batch-{i % 4}/scan {i}.tif", "x" * (100 * i))
    put("deep/a/b/c/d/e/f/g/needle.txt", "found me\n")
    put("README.txt", "Sample tree for the Fustor demo.\n")
    (root / "empty-dir").mkdir(exist_ok=True)
    link = root / "latest"
    if not link.is_symlink():
        link.symlink_to("projects/alpha")
    # directories: count the distinct parents once
    dirs = {p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()}
    return count + len(dirs) + 1  # + the symlink


def write_configs(home: Path, src: Path, api_port: int, recv_port: int) -> tuple[Path, Path]:
    (home / "logs").mkdir(parents=True, exist_ok=True)
    fusion = home / "fusion.yaml"
    fusion.write_text(f"""\
host: 127.0.0.1
port: {api_port}
receivers:
  demo-receiver:
    host: 127.0.0.1
    port: {recv_port}
    api_keys:
      - {{key: "{PUSH_KEY}", pipe_id: "{PIPE}"}}
views:
  {VIEW}:
    api_keys: ["{KEY}"]
pipes:
  {PIPE}:
    receiver: demo-receiver
    views: [{VIEW}]
""")
    agent = home / "agent.yaml"
    agent.write_text(f"""\
agent_id: demo-agent
sources:
  demo-source:
    uri: "{src}"
senders:
  demo-fusion:
    uri: "http://127.0.0.1:{recv_port}"
    credential: {{key: "{PUSH_KEY}"}}
pipes:
  demo-job: {{source: demo-source, sender: demo-fusion}}
""")
    return fusion, agent


def script(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        work = Path(args.work).absolute()
        self.home = work / "demo-home"
        self.src = Path(args.dir).absolute() if args.dir else work / "demo-src"
        self.mnt = Path(args.mnt).absolute() if args.mnt else work / "mnt"
        self.sample = not args.dir
        self.api_port, self.recv_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(os.environ, FUSTOR_HOME=str(self.home), PYTHONUNBUFFERED="1")
        self.env.pop("FUSTOR_CONFIG", None)
        self.mounted = False
        self.snapshot_timeout: float = args.timeout

    # ------------------------------------------------------------------ processes
    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.home / "logs" / f"{name}.out", "ab") as out:
            # Own session: Ctrl-C reaches the demo only, which stops the children in order.
            p = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.home / "logs" / f"{name}.out").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + ln for ln in text.splitlines()[-lines:])

    def check_alive(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            raise DemoError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")

    def stop(self) -> None:
        for name in ("mount", "agent", "fusion"):
            p = self.procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if name == "mount" and os.path.ismount(self.mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        # Both daemons were started in the foreground: their pid files are gone with them.

    # ------------------------------------------------------------------ steps
    def start(self) -> None:
        if self.sample:
            n = make_sample_tree(self.src)
            print(f"sample tree: {self.src} ({n} entries)")
        elif not self.src.is_dir():
            raise DemoError(f"DIR={self.src} is not a directory")
        fusion_cfg, agent_cfg = write_configs(self.home, self.src, self.api_port, self.recv_port)
        for name in ("fustor-fusion", "fustor-agent"):
            if script(name) is None:
                raise DemoError(f"{name} is not installed: run `make install`")
        self.spawn("fusion", [str(script("fustor-fusion")), "start", "--config", str(fusion_cfg)])
        self.wait_http(f"{self.api}/api/v1/views/{VIEW}/stats", "fusion")
        self.spawn("agent", [str(script("fustor-agent")), "start", "--config", str(agent_cfg)])
        self.wait_view_ready()
        self.start_mount()

    def wait_http(self, url: str, name: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.check_alive(name)
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, headers={"X-API-Key": KEY}, timeout=2.0)
                return
            time.sleep(0.2)
        raise DemoError(f"{name} did not answer at {url} within {READY_TIMEOUT:g}s")

    def wait_view_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.snapshot_timeout
        while time.monotonic() < deadline:
            self.check_alive("fusion")
            self.check_alive("agent")
            # The tree answers 503 until the first snapshot is complete (stats always answer).
            r = httpx.get(f"{self.api}/api/v1/views/{VIEW}/tree",
                          params={"path": "/", "recursive": "false"},
                          headers={"X-API-Key": KEY}, timeout=5.0)
            if r.status_code == 200:
                stats: dict[str, Any] = httpx.get(
                    f"{self.api}/api/v1/views/{VIEW}/stats", headers={"X-API-Key": KEY},
                    timeout=5.0).json()
                print(f"view {VIEW!r} ready: {stats.get('entries')} entries")
                return stats
            if r.status_code != 503:
                raise DemoError(f"unexpected answer from the view: {r.status_code} {r.text}")
            time.sleep(0.3)
        raise DemoError(f"the view was not ready within {self.snapshot_timeout:g}s:\n"
                        f"{self.log_tail('agent')}")

    def start_mount(self) -> None:
        exe = script("fustor-mount")
        why = None
        if exe is None or importlib.util.find_spec("fustor_mount.cli") is None:
            why = "fustor-mount is not installed"
        elif not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
            why = "FUSE is not available (/dev/fuse, fusermount3)"
        elif os.path.ismount(self.mnt):
            why = f"{self.mnt} is already a mount point"
        if why:
            print(f"mount skipped: {why}; the HTTP API works without it")
            return
        try:
            os.stat(self.mnt)
        except OSError as exc:  # left by a demo that was killed: "transport endpoint not connected"
            if exc.errno == errno.ENOTCONN:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        self.mnt.mkdir(parents=True, exist_ok=True)
        # Short kernel/mount caches so that changes to the source show up at once in the demo
        # (the defaults, 10 s and 60 s, suit production listings better).
        self.spawn("mount", [str(exe), str(self.mnt), "--url", self.api, "--view", VIEW,
                             "--api-key", KEY, "-o", "attr_timeout=1", "-o", "dir_timeout=1"])
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.ismount(self.mnt):
            if self.procs["mount"].poll() is not None or time.monotonic() > deadline:
                print(f"mount failed; the HTTP API still works. Its log:\n"
                      f"{self.log_tail('mount')}")
                return
            time.sleep(0.1)
        self.mounted = True

    def check(self) -> None:
        """Compare the view (API, and the mount when up) with the source directory."""
        want = sorted(os.listdir(self.src))
        r = httpx.get(f"{self.api}/api/v1/views/{VIEW}/tree",
                      params={"path": "/", "recursive": "false"},
                      headers={"X-API-Key": KEY}, timeout=10.0)
        r.raise_for_status()
        got = sorted(c["name"] for c in r.json()["entry"].get("children", []))
        if got != want:
            raise DemoError(f"API root listing {got} != source {want}")
        print(f"check: API lists the {len(got)} top-level entries of {self.src}")
        if not self.mounted:
            return
        seen = sorted(os.listdir(self.mnt))
        if seen != want:
            raise DemoError(f"mount root listing {seen} != source {want}")
        if self.sample:
            expect = {str(p.relative_to(self.src)) for p in self.src.rglob("*")}
            found = {str(p.relative_to(self.mnt)) for p in self.mnt.rglob("*")}
            if expect != found:
                raise DemoError(f"mount differs from the source: missing "
                                f"{sorted(expect - found)[:5]}, extra {sorted(found - expect)[:5]}")
            if os.readlink(self.mnt / "latest") != "projects/alpha":
                raise DemoError("the symlink 'latest' lost its target on the mount")
        print(f"check: the mount at {self.mnt} shows the same tree")

    def explain(self) -> None:
        m, a = self.mnt, self.api
        url = f"{a}/api/v1/views/{VIEW}"
        print(f"""
Fustor demo is running (logs: {self.home / 'logs'}).
  source : {self.src}
  Fusion : {a}  (view '{VIEW}', key '{KEY}'; receiver on port {self.recv_port})
Try:""")
        if self.mounted:
            print(f"""  ls -l {m}
  find {m} | head
  getfattr -d {m}/README.txt
  tree -L 2 {m}""")
        print(f"""  curl -H 'X-API-Key: {KEY}' '{url}/tree?path=/&recursive=false'
  curl -H 'X-API-Key: {KEY}' '{url}/search?pattern=*.tif'
  curl -H 'X-API-Key: {KEY}' '{url}/stats'
  touch {self.src}/new-file.txt   # in the view at once (inotify), on the mount within 1 s
  # realtime find of a directory, then its job:
  curl -H 'X-API-Key: {KEY}' '{url}/tree?path=/upload&force_real_time=True'
  curl '{a}/api/v1/management/jobs'
Press Ctrl-C to stop everything{' and unmount' if self.mounted else ''}.""", flush=True)

    def wait(self) -> None:
        while True:
            for name in list(self.procs):
                self.check_alive(name)
            time.sleep(0.5)


class DemoError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fustor.demo", description=__doc__)
    p.add_argument("--dir", help="source directory (default: a sample tree in the work dir)")
    p.add_argument("--mnt", help="mount point (default: <work>/mnt)")
    p.add_argument("--work", default=".work", help="work directory (default: ./.work)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SEC",
                   help="how long the first snapshot of the source may take (default 300)")
    p.add_argument("--check", action="store_true",
                   help="verify the view and the mount, then stop and exit (0 if all good)")
    args = p.parse_args(argv)
    demo = Demo(args)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    # Explicitly: a shell starting us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, interrupted)
    try:
        demo.start()
        if args.check:
            demo.check()
            return 0
        demo.explain()
        demo.wait()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except (DemoError, httpx.HTTPError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        demo.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    print("stopped" + (f" and unmounted {demo.mnt}" if demo.mounted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
