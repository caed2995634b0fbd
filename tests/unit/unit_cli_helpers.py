"""Helpers of the CLI tests: a FUSTOR_HOME with free ports, the CLI run as a subprocess,
waits with deadlines."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fustor import daemon

GUIDE_FUSION = (Path(__file__).parent / "data" / "guide_fusion_default.yaml").read_text("utf-8")
DEADLINE = 20.0


def command(role: str) -> list[str]:
    """The installed console script, as users (and systemd) run it."""
    return [str(Path(sys.executable).parent / f"fustor-{role}")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Env:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.api_port = free_port()
        self.recv_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k != "FUSTOR_CONFIG"}
        self.env["FUSTOR_HOME"] = str(home)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.procs: list[subprocess.Popen[str]] = []

    def write_fusion(self, extra: str = "", name: str = "default.yaml") -> Path:
        d = self.home / "fusion-config"
        d.mkdir(parents=True, exist_ok=True)
        text = f"host: 127.0.0.1\nport: {self.api_port}\n{extra}" + GUIDE_FUSION.replace(
            "port: 18888", f"port: {self.recv_port}"
        )
        (d / name).write_text(text, encoding="utf-8")
        return d / name

    def run(self, *args: str, role: str = "fusion", timeout: float = DEADLINE,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command(role), *args], env=env or self.env,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    def spawn(self, *args: str, role: str = "fusion") -> subprocess.Popen[str]:
        err = open(self.home / f"stderr-{len(self.procs)}.txt", "w")  # noqa: SIM115
        p = subprocess.Popen(
            [*command(role), *args], env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
        )
        err.close()
        self.procs.append(p)
        return p

    def stderr_of(self, index: int) -> str:
        return (self.home / f"stderr-{index}.txt").read_text()

    def pid_file(self, role: str = "fusion") -> Path:
        return self.home / f"{role}.pid"

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
            if p.stdout is not None:
                p.stdout.close()
        pid = daemon.read_pid(self.pid_file())
        if pid is not None and pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


def read_line(proc: subprocess.Popen[str], contains: str, timeout: float = DEADLINE) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if contains in line:
                return line
    raise AssertionError(f"no line with {contains!r} within {timeout}s; got {seen!r}")


def wait_until(pred: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def assert_one_line_error(stderr: str, *words: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fustor-"), lines
    assert "Traceback" not in stderr
    for w in words:
        assert w in lines[0]
