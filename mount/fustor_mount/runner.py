"""Mount lifecycle: recover a dead mountpoint, choose and check the view, mount, serve until
unmounted (`fusermount3 -u`) or signalled (SIGINT/SIGTERM/SIGHUP → clean unmount), and
unmount on the way out whatever happened.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
from typing import Any

import pyfuse3
import trio

from fustor.errors import AuthError, ConfigError, FustorError, ScopeError
from fustor_mount.client import FusionClient
from fustor_mount.config import MountConfig
from fustor_mount.finder import RealtimeFinder
from fustor_mount.operations import FustorOperations

log = logging.getLogger(__name__)

STOP_GRACE_SEC = 5.0  # after a signal: requests in flight get this long before being cancelled


class MountError(FustorError):
    """The filesystem could not be mounted (the mountpoint, libfuse)."""


def _connection_lost(mountpoint: str) -> bool:
    """True for a FUSE mount whose process is gone. statfs always reaches the filesystem
    (stat may be answered from the kernel's attribute cache)."""
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def prepare_mountpoint(mountpoint: str) -> None:
    """Check `mountpoint` is a directory we can mount on. A dead FUSE mount left by a crashed
    process (ENOTCONN) is lazily unmounted first."""
    dead = False
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mountpoint {mountpoint} does not exist (create it with mkdir)") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountError(f"mountpoint {mountpoint}: {exc.strerror}") from exc
        dead = True
    if dead or (os.path.ismount(mountpoint) and _connection_lost(mountpoint)):
        log.warning("%s is a dead mount (its process is gone): unmounting it first", mountpoint)
        r = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True,
                           text=True, timeout=30, check=False)
        if r.returncode != 0:
            raise MountError(f"cannot clear the dead mount at {mountpoint}: {r.stderr.strip()}")
        st = os.stat(mountpoint)
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already mounted (unmount it first: fusermount3 -u {mountpoint})")


async def choose_view(client: FusionClient) -> str:
    """The one view our key can read, when no view was configured."""
    try:
        views = await client.management_views()
    except (AuthError, ScopeError) as exc:
        raise ConfigError(
            f"no view given, and Fusion does not list its views to this client ({exc.message}): "
            "pass --view NAME or set 'view:' in mount.yaml"
        ) from exc
    readable = [v for v in views if await client.can_read(v)]
    if len(readable) == 1:
        log.info("no view given: using %s, the only view this key can read", readable[0])
        return readable[0]
    if not readable:
        raise ConfigError(f"no view given, and this key can read none of Fusion's views {views}")
    raise ConfigError(f"no view given, and this key can read several views {readable}: pass --view NAME")


async def _stop_on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s received: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            break
        # pyfuse3.main() returns once its requests are answered; answers wait on Fusion at
        # most one request timeout, but a second signal or the grace period cuts that short.
        with trio.move_on_after(STOP_GRACE_SEC):
            async for _ in signals:
                break
        log.warning("requests still running after a stop signal: cancelling them")
        scope.cancel()


async def serve_mount(
    cfg: MountConfig, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Mount the view and serve it until unmounted or signalled."""
    client = FusionClient(cfg.url, cfg.view or "", cfg.api_key, timeout=cfg.timeout_sec,
                          connect_timeout=cfg.connect_timeout_sec)
    async with client:
        await trio.to_thread.run_sync(prepare_mountpoint, cfg.mountpoint)
        view = cfg.view or await choose_view(client)
        client.use_view(view)
        await client.stats()  # a wrong URL, key or view fails here, before mounting
        finder = None
        if cfg.realtime_find:
            finder = RealtimeFinder(client, wait=cfg.find_wait_sec, rate=cfg.find_rate,
                                    burst=cfg.find_burst)
        ops = FustorOperations(client, cfg.cache, finder=finder)
        options = cfg.fuse_options(view)
        try:
            pyfuse3.init(ops, cfg.mountpoint, options)
        except RuntimeError as exc:
            raise MountError(f"cannot mount {cfg.mountpoint} with options {sorted(options)}: {exc}") from exc
        client.mounted = True
        try:
            log.info("mounted view %s of %s at %s (options %s, realtime find %s)", view, cfg.url,
                     cfg.mountpoint, ",".join(sorted(options)), "on" if finder else "off")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signals, nursery.cancel_scope)
                ops.nursery = nursery
                task_status.started({"view": view, "mountpoint": cfg.mountpoint})
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", cfg.mountpoint)
