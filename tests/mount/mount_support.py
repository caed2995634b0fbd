"""Helpers for the mount tests (plain code, no pytest): a real Fusion config, a scripted agent
speaking docs/PROTOCOL.md, and a `fustor-mount` subprocess that is always stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import trio

from fustor.config import FusionConfig, parse_fusion

T0 = 1_700_000_000.5  # storage times far in the past of the wall clock (exact in binary)
READ_KEY = "mount-read-key"
PUSH_KEY = "mount-push-key"
VIEW = "unified-view"


def fusion_config(port: int = 0) -> FusionConfig:
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "receivers": {"r1": {"host": "127.0.0.1", "port": 0,
                             "api_keys": [{"key": PUSH_KEY, "pipe_id": "pipe-1"}]}},
        "views": {VIEW: {"api_keys": [READ_KEY], "driver_params": {"hot_file_threshold": 0.0}}},
        "pipes": {"pipe-1": {"receiver": "r1", "views": [VIEW]}},
    }
    return parse_fusion(data, {"": Path("mount-test-fusion.yaml")})


def row(path: str, kind: str = "file", *, size: int = 0, mtime: float = T0, mode: int | None = None,
        uid: int = 1000, gid: int = 1000, target: str | None = None, scan: str | None = None,
        **extra: Any) -> dict[str, Any]:
    if mode is None:
        mode = 0o755 if kind == "dir" else 0o644
    r: dict[str, Any] = {"op": "upsert", "path": path, "type": kind, "size": size,
                         "mtime": mtime, "ctime": mtime, "mode": mode, "uid": uid, "gid": gid}
    if kind == "symlink":
        r["target"] = target or "target"
    if scan is not None:
        r["scan"] = scan
    r.update(extra)
    return r


OPEN_AGENTS: list[ScriptedAgent] = []  # closed by the tests' autouse fixture, whatever happened


class ScriptedAgent:
    """Plays an agent: one leader session, event batches, and realtime-find answers."""

    def __init__(self, receiver_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=receiver_url, headers={"X-API-Key": PUSH_KEY},
                                      timeout=40.0)
        self.sid = ""
        self.seq = 0
        self.finds: list[dict[str, Any]] = []
        OPEN_AGENTS.append(self)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):  # also from a cancelled scope (end of a test)
            await self.http.aclose()

    async def open(self) -> None:
        r = await self.http.post("/api/v1/pipe/sessions", json={
            "agent_id": "mount-test-agent", "host": "test", "source_uri": "/src",
            "capabilities": ["realtime", "snapshot", "audit", "find"], "version": "0.9.0"})
        r.raise_for_status()
        self.sid = r.json()["session_id"]

    async def send(self, rows: list[dict[str, Any]]) -> None:
        for i in range(0, len(rows), 5000):
            self.seq += 1
            # stdlib json escapes lone surrogates (non-UTF-8 names); httpx's json= would not.
            body = json.dumps({"seq": self.seq, "events": rows[i:i + 5000]})
            r = await self.http.post(f"/api/v1/pipe/sessions/{self.sid}/events", content=body,
                                     headers={"Content-Type": "application/json"})
            r.raise_for_status()

    async def snapshot(self, entries: Iterable[dict[str, Any]], scan: str = "snap-1") -> None:
        """A complete snapshot of `entries` (dirs listed completely, root included)."""
        rows = [{"op": "scan_start", "scan": scan, "kind": "snapshot", "path": "/", "recursive": True}]
        rows.append(row("/", "dir", scan=scan))
        dirs = ["/"]
        for e in entries:
            rows.append(dict(e, scan=scan))
            if e["type"] == "dir":
                dirs.append(e["path"])
        rows += [{"op": "dir_done", "scan": scan, "path": d, "skipped": False} for d in dirs]
        rows.append({"op": "scan_end", "scan": scan, "ok": True, "entries": len(rows), "errors": 0})
        await self.send(rows)

    async def serve_finds_forever(
        self, answer: Callable[[str], list[dict[str, Any]]], delay: float = 0.0
    ) -> None:
        """Answer each find command with `answer(path)` (rows of that directory's children)."""
        after = 0
        n = 0
        while True:
            r = await self.http.get(f"/api/v1/pipe/sessions/{self.sid}/commands",
                                    params={"after": after, "wait": 5})
            r.raise_for_status()
            for cmd in r.json()["commands"]:
                after = max(after, cmd["seq"])
                if cmd["type"] != "find":
                    continue
                self.finds.append(cmd)
                await trio.sleep(delay)
                n += 1
                scan = f"find-{n}"
                path = cmd["path"]
                rows = [{"op": "scan_start", "scan": scan, "kind": "find", "path": path,
                         "recursive": False, "job_id": cmd["job_id"]}]
                rows += [dict(e, scan=scan) for e in answer(path)]
                rows.append({"op": "dir_done", "scan": scan, "path": path, "skipped": False})
                rows.append({"op": "scan_end", "scan": scan, "ok": True, "entries": len(rows), "errors": 0})
                await self.send(rows)


class MountProcess:
    """`python -m fustor_mount` in a subprocess; stop() unmounts it and asserts so."""

    def __init__(self, mountpoint: Path, url: str, home: Path, *args: str) -> None:
        self.mountpoint = mountpoint
        self.log = home / f"mount-{mountpoint.name}.log"
        env = dict(os.environ, FUSTOR_HOME=str(home), PYTHONUNBUFFERED="1")
        env.pop("FUSTOR_API_KEY", None)
        self.logf = open(self.log, "ab")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fustor_mount", str(mountpoint), "--url", url,
             "--view", VIEW, "--api-key", READ_KEY, *args],
            stdout=self.logf, stderr=subprocess.STDOUT, env=env,
        )

    def wait_mounted(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not (os.path.ismount(self.mountpoint) and _live(self.mountpoint)):
            if self.proc.poll() is not None:
                raise AssertionError(f"fustor-mount exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not mounted after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        if not self.logf.closed:
            self.logf.flush()
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then make sure nothing is left mounted or running."""
        code = None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        finally:
            if os.path.ismount(self.mountpoint) or _dead_mount(self.mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)],
                               capture_output=True, timeout=30, check=False)
            self.logf.close()
        return code


def _live(path: Path) -> bool:
    """A mount that answers (a dead one left by a crash fails statfs with ENOTCONN)."""
    try:
        os.statvfs(path)
    except OSError:
        return False
    return True


def _dead_mount(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return True
    return False
