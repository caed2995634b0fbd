"""`fustor-mount MOUNTPOINT`: mount a Fusion view as a read-only filesystem.

Exit codes: 0 unmounted cleanly; 2 bad configuration or arguments; 1 anything else (Fusion
unreachable, key refused, mount failed). -D detaches once the filesystem is mounted, with a
pid file per mountpoint so several mounts can run side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from fustor import daemon
from fustor.cli import missing_extra
from fustor.config import fustor_home
from fustor.errors import ConfigError, FustorError
from fustor.logs import setup_logging

if TYPE_CHECKING:
    from fustor_mount.config import MountConfig

log = logging.getLogger("fustor_mount")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fustor-mount",
        description="Mount a Fusion view as a read-only filesystem (metadata only: names, "
        "types, sizes, times, modes, owners; file content cannot be read).",
    )
    p.add_argument("mountpoint", help="an empty directory to mount the view on")
    p.add_argument("--url", help="Fusion's API URL (default: mount.yaml's url, or http://127.0.0.1:8101)")
    p.add_argument("--view", help="the view to mount (default: the only view the key can read)")
    p.add_argument("--api-key", help="the view's read key (or FUSTOR_API_KEY, or --api-key-file)")
    p.add_argument("--api-key-file", help="a file holding the view's read key")
    p.add_argument("--config", help="config file (default: $FUSTOR_HOME/mount.yaml)")
    p.add_argument("-D", "--detach", action="store_true", help="run in the background once mounted")
    p.add_argument("-o", dest="options", action="append", metavar="OPTIONS",
                   help="mount options, comma separated: allow_other, attr_timeout=SEC, "
                   "attr_timeout_min=SEC, entry_timeout=SEC, negative_timeout=SEC, "
                   "dir_timeout=SEC, prefetch_entries=N, ...")
    p.add_argument("--no-realtime-find", action="store_true",
                   help="do not ask the agents to look for names the view does not know")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    return p


def _slug(mountpoint: str) -> str:
    """A file-name-safe, unique key for a mountpoint (pid and log file names)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", mountpoint.strip("/")) or "root"
    digest = hashlib.blake2b(os.fsencode(mountpoint), digest_size=4).hexdigest()
    return f"{readable[-60:]}-{digest}"


def pid_file(mountpoint: str) -> Path:
    return fustor_home() / f"mount-{_slug(mountpoint)}.pid"


def log_file(cfg: MountConfig) -> Path:
    if cfg.log_file:
        return Path(cfg.log_file).expanduser()
    return fustor_home() / "logs" / f"mount-{_slug(cfg.mountpoint)}.log"


async def _run(cfg: MountConfig) -> None:
    async with trio.open_nursery() as nursery:
        from fustor_mount.runner import serve_mount  # pyfuse3: only where mounts are made

        info = await nursery.start(serve_mount, cfg)
        daemon.notify_ready(f"mounted view {info['view']} at {cfg.mountpoint} (pid {os.getpid()})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from fustor_mount.config import load_mount_config  # needs pyfuse3
    except ImportError as exc:
        return missing_extra("fustor-mount", "mount", exc)
    try:
        cfg = load_mount_config(args)
    except ConfigError as exc:
        print(f"fustor-mount: {exc.message}", file=sys.stderr)
        return 2
    pidf: Path | None = None
    if cfg.detach:
        pidf = pid_file(cfg.mountpoint)
        other = daemon.read_pid(pidf)
        if other is not None:
            print(f"fustor-mount: {cfg.mountpoint} is already served by pid {other} ({pidf})", file=sys.stderr)
            return 1
        logf = log_file(cfg)
        setup_logging(cfg.log_level, file=logf)
        daemon.detach(pidf, logf)
    else:
        setup_logging(cfg.log_level, file=cfg.log_file)
    # httpx logs every request at INFO: far too much for a filesystem.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    code = 0
    try:
        trio.run(_run, cfg)
    except* ConfigError as eg:
        code = _fail(eg, 2, detached=pidf is not None)
    except* FustorError as eg:
        code = _fail(eg, 1, detached=pidf is not None)
    except* KeyboardInterrupt:
        code = 1
    finally:
        if pidf is not None:
            daemon.remove_pid_file(pidf)
    return code


def _fail(eg: BaseExceptionGroup[FustorError], code: int, *, detached: bool) -> int:
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    message = exc.message if isinstance(exc, FustorError) else str(exc)
    if detached:
        log.error("%s", message)
        daemon.notify_failed(message, code)
    else:
        print(f"fustor-mount: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
