"""Pid files, detaching (double fork) and stopping a running Fustor process.

A pid file holds one decimal pid. It is "live" only if that process exists, is not a zombie,
and started before the file was written (so a pid recycled by an unrelated process after a
crash is recognised as stale). The run file beside it (`<role>.status.json`) carries what the
running process wants `status` to show: its URLs and a periodic status snapshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

from fustor.config import fustor_home

# The write end of the pipe to the waiting parent, in a detached child until it is ready.
_ready_fd: int | None = None
READY_TIMEOUT = 60.0


def pid_path(role: str) -> Path:
    return fustor_home() / f"{role}.pid"


def log_path(role: str) -> Path:
    return fustor_home() / "logs" / f"{role}.log"


def run_path(role: str) -> Path:
    return fustor_home() / f"{role}.status.json"


# ---------------------------------------------------------------------------- liveness
def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _proc_stat(pid: int) -> tuple[str, float] | None:
    """(state letter, start time as wall clock) from /proc, or None if unavailable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    boot = _boot_time()
    if boot is None or len(fields) < 20:
        return None
    start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return fields[0], start


def pid_alive(pid: int) -> bool:
    """True if `pid` names a running (not zombie) process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    st = _proc_stat(pid)
    return st is None or st[0] not in ("Z", "X")


def read_pid(path: Path) -> int | None:
    """The pid in `path` if that process is alive and is the one that wrote it, else None."""
    try:
        text = path.read_text().strip()
        written = path.stat().st_mtime
    except OSError:
        return None
    try:
        pid = int(text.split()[0])
    except (ValueError, IndexError):
        return None
    if pid == os.getpid():
        return pid
    if not pid_alive(pid):
        return None
    st = _proc_stat(pid)
    # /proc start times have about 1 s of resolution (btime is whole seconds): allow slack. A
    # start time in the future means the clocks do not agree (time namespaces): trust the pid.
    if st is not None and written + 2.0 < st[1] <= time.time() + 2.0:
        return None
    return pid


def write_pid_file(path: Path, pid: int | None = None) -> bool:
    """Create `path` holding `pid` (default: ours) unless a live process owns it.

    Creation is atomic (hard link of a complete temp file), so two racing starts cannot both
    win; a stale file is replaced. Returns False if another live process holds it.
    """
    pid = os.getpid() if pid is None else pid
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{pid}.tmp")
    tmp.write_text(f"{pid}\n")
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                other = read_pid(path)
                if other is not None and other != pid:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_pid_file(path: Path, pid: int | None = None) -> None:
    """Remove `path` if it still names `pid` (default: ours); never someone else's file."""
    pid = os.getpid() if pid is None else pid
    try:
        if int(path.read_text().split()[0]) != pid:
            return
        path.unlink()
    except (OSError, ValueError, IndexError):
        pass


# ---------------------------------------------------------------------------- run file
def write_run_file(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace the run file (readers never see a half-written one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str, sort_keys=True))
    os.replace(tmp, path)


def read_run_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------- detach
def detach(pid_file: Path, log_file: Path) -> None:
    """Become a daemon: double fork, new session, cwd '/', stdio to /dev/null and `log_file`.

    Returns in the daemon (grandchild) after it wrote `pid_file`. The original process waits
    until the daemon calls `notify_ready()` (then exits 0 and prints the daemon's message),
    or `notify_failed()` / dies during start-up (then prints why and exits non-zero).
    """
    global _ready_fd
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(wfd)
        os.waitpid(first, 0)
        code = _wait_for_daemon(rfd, log_file)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(rfd)
    try:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        if not write_pid_file(pid_file):
            other = read_pid(pid_file)
            os.write(wfd, f"1 already running (pid {other}, pid file {pid_file})\n".encode())
            os._exit(1)
    except BaseException as exc:  # report anything to the waiting parent, never return twice
        with contextlib.suppress(OSError):
            os.write(wfd, f"1 cannot detach: {exc}\n".encode())
        os._exit(1)
    _ready_fd = wfd


def _wait_for_daemon(rfd: int, log_file: Path) -> int:
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"still starting; see {log_file}")
            return 0
        ready, _, _ = select.select([rfd], [], [], left)
        if not ready:
            continue
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        buf += chunk
    os.close(rfd)
    text = buf.decode(errors="replace").strip()
    if not text:
        print(f"error: the daemon exited during start-up; see {log_file}", file=sys.stderr)
        return 1
    head, _, message = text.partition(" ")
    code = int(head) if head.isdigit() else 1
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code


def notify_ready(message: str) -> None:
    """Tell the waiting parent the daemon is up (no-op when not detached)."""
    _notify(0, message)


def notify_failed(message: str, code: int = 1) -> None:
    _notify(code, message)


def _notify(code: int, message: str) -> None:
    global _ready_fd
    if _ready_fd is None:
        return
    fd, _ready_fd = _ready_fd, None
    with contextlib.suppress(OSError):
        os.write(fd, f"{code} {message}\n".encode())
    with contextlib.suppress(OSError):
        os.close(fd)


# ---------------------------------------------------------------------------- stop
def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid_file: Path, timeout: float = 10.0, *, force: bool = False) -> bool:
    """SIGTERM the process named by `pid_file` and wait up to `timeout` seconds for it to go.

    True when it is gone (or was not running). With `force`, a process still alive at the
    deadline gets SIGKILL. A pid file left behind by a killed process is removed.
    """
    pid = read_pid(pid_file)
    if pid is None:
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if not wait_gone(pid, timeout):
        if not force:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_gone(pid, 5.0):
            return False
    remove_pid_file(pid_file, pid)
    return True
