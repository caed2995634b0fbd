"""End-to-end harness: real Fusion, agent and mount processes on loopback, driven by their CLIs.

Plain sync code (no pytest, no trio) so `bench/run.py` uses it too: free ports, config writers,
a process wrapper that logs to files and always stops, waits with deadlines, bindfs layers and
an HTTP client for the query API. Tree comparison lives in `e2e_trees.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

T = TypeVar("T")

BIN = Path(sys.executable).parent
VIEW = "unified-view"
VIEW_KEY = "view-read-key"


# ---------------------------------------------------------------------------- waits
class WaitTimeout(AssertionError):
    pass


def command(name: str) -> list[str]:
    """The CLI `name` (e.g. "fustor-fusion") of this venv; FUSTOR_E2E_CMD_FUSTOR_FUSION etc.
    replace it (a wrapper for debugging, or an installed build under test)."""
    override = os.environ.get("FUSTOR_E2E_CMD_" + name.upper().replace("-", "_"))
    return shlex.split(override) if override else [str(BIN / name)]


def wait_until(pred: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `pred` until it returns a truthy value; raise WaitTimeout naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- processes
@dataclass
class Proc:
    """One child process; output goes to files under `logdir`, shown by `tail()`."""

    name: str
    argv: list[str]
    home: Path
    logdir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def out_path(self) -> Path:
        return self.logdir / f"{self.name}.out"

    @property
    def err_path(self) -> Path:
        return self.logdir / f"{self.name}.err"

    def start(self) -> Proc:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("FUSTOR_CONFIG", None)
        env.update({"FUSTOR_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}, **self.env_extra)
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            self.popen = subprocess.Popen(
                self.argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                cwd=str(self.home), start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap (a crash)."""
        if self.popen is None:
            return
        if self.alive():
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
        self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (after SIGCONT, in case a test stopped it), then SIGKILL past `timeout`."""
        if self.popen is None:
            return None
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGCONT)
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def rss(self) -> int:
        """Resident set size in bytes (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ValueError("no VmRSS")

    def tail(self, lines: int = 60) -> str:
        parts = []
        for p in (self.out_path, self.err_path):
            if p.exists():
                text = p.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"----- {p.name} (last {len(text)} lines)\n" + "\n".join(text))
        rc = None if self.popen is None else self.popen.poll()
        return f"===== {self.name} pid={self.popen.pid if self.popen else None} rc={rc}\n" + (
            "\n".join(parts) or "(no output)")


class ProcGroup:
    """Every process and mount a test started; `close()` stops them all, in reverse."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.logdir = base / "logs"
        self.procs: list[Proc] = []
        self.cleanups: list[Callable[[], None]] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def defer(self, fn: Callable[[], None]) -> None:
        self.cleanups.append(fn)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def close(self) -> None:
        errors: list[BaseException] = []
        # Processes first (a mount unmounts itself on SIGTERM; agents must not see their
        # bindfs source vanish), then the rest (bindfs layers, clients, fallbacks).
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as exc:
                errors.append(exc)
        self.cleanups.clear()
        if errors:
            raise errors[0]


# ---------------------------------------------------------------------------- configs
@dataclass
class PipeSpec:
    id: str
    key: str
    audit_interval_sec: float = 2.0
    full_audit_interval_sec: float = 4.0
    sentinel_interval_sec: float = 2.0
    views: tuple[str, ...] = (VIEW,)


def fusion_config(
    path: Path, *, api_port: int, receiver_port: int, pipes: list[PipeSpec],
    session_timeout: float = 3.0, views: dict[str, list[str]] | None = None,
    hot_file_threshold: float = 1.0, max_tree_items: int = 1_000_000,
    management_keys: list[str] | None = None, level: str = "INFO",
    receiver_extra: dict[str, Any] | None = None,
) -> Path:
    views = views or {VIEW: [VIEW_KEY]}
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": api_port,
        "session_timeout_seconds": session_timeout,
        "logging": {"level": level},
        "receivers": {"rx": {
            "driver": "http", "host": "127.0.0.1", "port": receiver_port,
            "api_keys": [{"key": p.key, "pipe_id": p.id} for p in pipes],
            **(receiver_extra or {}),
        }},
        "views": {v: {
            "driver": "fs", "api_keys": keys,
            "driver_params": {"hot_file_threshold": hot_file_threshold,
                              "max_tree_items": max_tree_items, "suspect_ttl_sec": 2.0},
        } for v, keys in views.items()},
        "pipes": {p.id: {
            "receiver": "rx", "views": list(p.views),
            "audit_interval_sec": p.audit_interval_sec,
            "full_audit_interval_sec": p.full_audit_interval_sec,
            "sentinel_interval_sec": p.sentinel_interval_sec,
        } for p in pipes},
    }
    if management_keys:
        data["management"] = {"api_keys": management_keys}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def agent_config(
    path: Path, *, agent_id: str, source: str | Path, receiver_url: str, key: str,
    coalesce_sec: float = 0.05, level: str = "INFO",
) -> Path:
    data = {
        "agent_id": agent_id,
        "logging": {"level": level},
        "sources": {"src": {"driver": "fs", "uri": str(source),
                            "driver_params": {"coalesce_sec": coalesce_sec}}},
        "senders": {"fusion": {"driver": "fusion", "uri": receiver_url,
                               "credential": {"key": key}, "timeout_sec": 10.0}},
        "pipes": {"sync-job": {"source": "src", "sender": "fusion"}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- API client
class Api:
    """Query + management API of one Fusion, for one view."""

    def __init__(self, base: str, view: str = VIEW, key: str = VIEW_KEY) -> None:
        self.base = base.rstrip("/")
        self.view = view
        self.key = key
        self.http = httpx.Client(base_url=self.base, timeout=30.0,
                                 headers={"X-API-Key": key})

    def close(self) -> None:
        self.http.close()

    def get(self, endpoint: str, **params: Any) -> httpx.Response:
        return self.http.get(f"/api/v1/views/{self.view}/{endpoint}", params=_params(params))

    def json(self, endpoint: str, **params: Any) -> dict[str, Any]:
        r = self.get(endpoint, **params)
        if r.status_code != 200:
            raise ApiError(r)
        return r.json()  # type: ignore[no-any-return]

    def tree(self, path: str = "/", **params: Any) -> dict[str, Any]:
        return self.json("tree", path=path, **params)

    def stats(self) -> dict[str, Any]:
        return self.json("stats", allow_partial=True)

    def sessions(self) -> list[dict[str, Any]]:
        return self.json("sessions", allow_partial=True)["sessions"]  # type: ignore[no-any-return]

    def mgmt(self, endpoint: str, key: str | None = None) -> dict[str, Any]:
        # Loopback clients need no key when none is configured; a view key is refused (403).
        headers = {"X-API-Key": key} if key else {}
        r = httpx.get(f"{self.base}/api/v1/management/{endpoint}", headers=headers, timeout=30.0)
        if r.status_code != 200:
            raise ApiError(r)
        return r.json()  # type: ignore[no-any-return]

    def ready(self) -> bool:
        r = self.get("tree", path="/", recursive=False)
        return r.status_code == 200

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until(self.ready, timeout, f"view {self.view} to be ready (200 on /tree)")

    def pipe_stats(self, pipe: str) -> dict[str, Any]:
        return self.stats()["pipes"][pipe]  # type: ignore[no-any-return]


class ApiError(AssertionError):
    def __init__(self, r: httpx.Response) -> None:
        self.status = r.status_code
        super().__init__(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}")


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (("true" if v else "false") if isinstance(v, bool) else v)
            for k, v in params.items() if v is not None}


# ---------------------------------------------------------------------------- cluster
@dataclass
class Cluster:
    """Fusion plus any agents and mounts of one test, all under `group`."""

    group: ProcGroup
    pipes: list[PipeSpec]
    api_port: int = 0
    receiver_port: int = 0
    fusion: Proc | None = None
    fusion_cfg: Path | None = None
    fusion_kwargs: dict[str, Any] = field(default_factory=dict)
    _n: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    def api(self, view: str = VIEW, key: str = VIEW_KEY) -> Api:
        a = Api(self.api_url, view, key)
        self.group.defer(a.close)
        return a

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def start_fusion(self, **kwargs: Any) -> Proc:
        if not self.api_port:
            self.api_port, self.receiver_port = free_port(), free_port()
        self.fusion_kwargs.update(kwargs)
        self.fusion_cfg = fusion_config(
            self.group.base / "fusion-home" / "fusion.yaml", api_port=self.api_port,
            receiver_port=self.receiver_port, pipes=self.pipes, **self.fusion_kwargs)
        p = self.group.add(Proc(self._name("fusion"),
                                [*command("fustor-fusion"), "start", "--config", str(self.fusion_cfg)],
                                self.group.base / "fusion-home", self.group.logdir)).start()
        self.fusion = p
        wait_until(lambda: _http_up(self.api_url) or _dead(p), 30,
                   f"Fusion API on {self.api_url}")
        if not p.alive():
            raise AssertionError(f"Fusion exited at start\n{p.tail()}")
        return p

    def restart_fusion(self) -> Proc:
        if self.fusion is not None:
            self.fusion.kill()
        return self.start_fusion()

    def start_agent(self, source: str | Path, key: str, *, receiver_url: str | None = None,
                    wrap: list[str] | None = None, name: str | None = None) -> Proc:
        name = name or self._name("agent")
        home = self.group.base / f"{name}-home"
        cfg = agent_config(home / "agent.yaml", agent_id=f"e2e-{name}", source=source,
                           receiver_url=receiver_url or self.receiver_url, key=key)
        argv = [*(wrap or []), *command("fustor-agent"), "start", "--config", str(cfg)]
        return self.group.add(Proc(name, argv, home, self.group.logdir)).start()

    def start_mount(self, mountpoint: Path, *, extra: list[str] | None = None,
                    view: str = VIEW, key: str = VIEW_KEY) -> Proc:
        mountpoint.mkdir(parents=True, exist_ok=True)
        name = self._name("mount")
        argv = [*command("fustor-mount"), str(mountpoint), "--url", self.api_url,
                "--view", view, "--api-key", key, *(extra or [])]
        p = self.group.add(Proc(name, argv, self.group.base / f"{name}-home",
                                self.group.logdir)).start()
        self.group.defer(lambda: unmount(mountpoint, p))
        wait_until(lambda: os.path.ismount(mountpoint) or _dead(p), 30,
                   f"fustor-mount on {mountpoint}")
        if not p.alive():
            raise AssertionError(f"fustor-mount exited at start\n{p.tail()}")
        return p


def _dead(p: Proc) -> bool:
    return not p.alive()


def _http_up(url: str) -> bool:
    try:
        httpx.get(url + "/api/v1/health", timeout=2.0)
        return True
    except httpx.TransportError:
        return False


# ---------------------------------------------------------------------------- mounts
def unmount(mountpoint: Path, proc: Proc | None = None) -> None:
    """Stop a FUSE mount: SIGTERM its process, then fusermount3 -u -z if still mounted."""
    if proc is not None:
        proc.stop(timeout=10)
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False,
                       capture_output=True)
    if os.path.ismount(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def bindfs_mount(src: Path, mountpoint: Path) -> None:
    """A FUSE passthrough view of `src`: writes made in `src` are invisible to inotify on it.

    Attribute and entry caching are off so the agent's stats see the storage as it is now."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bindfs", "-o", "attr_timeout=0,entry_timeout=0,negative_timeout=0",
                    str(src), str(mountpoint)], check=True, capture_output=True)
    wait_until(lambda: os.path.ismount(mountpoint), 10, f"bindfs on {mountpoint}")


def bindfs_unmount(mountpoint: Path) -> None:
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, capture_output=True)
    if os.path.ismount(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False,
                       capture_output=True)
    if os.path.ismount(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


@contextlib.contextmanager
def bindfs(src: Path, mountpoint: Path) -> Iterator[Path]:
    bindfs_mount(src, mountpoint)
    try:
        yield mountpoint
    finally:
        bindfs_unmount(mountpoint)


def dump_json(obj: object) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)[:4000]


# ---------------------------------------------------------------------------- slow link
class SlowProxy:
    """A TCP relay that delays every chunk Fusion sends back by `delay` seconds: a Fusion that
    answers slowly, as seen by the agents pointed at `url`."""

    def __init__(self, target_port: int, delay: float) -> None:
        import threading

        self.target_port = target_port
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.closed = False
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import threading

        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.delay),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
