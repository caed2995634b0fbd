"""The trio side of `fustor-<role> start`: one `trio.run` around the role's `serve`, the signal
handling (SIGTERM/SIGINT: graceful stop, bounded; SIGHUP: reload), the bound URLs announced,
and the run file that `status` reads."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from fustor import daemon
from fustor.errors import ConfigError, FustorError
from fustor.logs import set_level

log = logging.getLogger(__name__)

# After SIGTERM/SIGINT the serving tasks are cancelled; if they have not finished after this
# long (a blocking thread, a stuck peer) the process exits anyway. Below `stop`'s default wait.
GRACE_SEC = 8.0
# With a handle that has `stop()`, it gets this long to finish on its own before cancellation.
SOFT_STOP_SEC = 3.0
STATUS_EVERY_SEC = 5.0


class Supervisor:
    """Runs `serve(config, task_status=...)` under trio until SIGTERM/SIGINT; SIGHUP reloads."""

    def __init__(
        self, role: str, *, load: Callable[[str | None], Any],
        serve: Callable[..., Awaitable[None]], config: Any, source: str | None,
        detached: bool,
    ) -> None:
        self.role, self.prog = role, f"fustor-{role}"
        self.load, self.serve_fn, self.detached = load, serve, detached
        self.config, self.source = config, source
        self.pid_file, self.run_file = daemon.pid_path(role), daemon.run_path(role)
        self.handle: Any = None
        self.serve_scope: trio.CancelScope | None = None
        self.outer: trio.Nursery | None = None
        self.stopping = False
        self.ended_by_itself = False
        self.timer: threading.Timer | None = None
        self.started_at = time.time()

    async def main(self) -> int:
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        try:
            with trio.open_signal_receiver(*sigs) as signals:
                async with trio.open_nursery() as outer:
                    self.outer = outer
                    outer.start_soon(self.watch_signals, signals)
                    try:
                        async with trio.open_nursery() as inner:
                            self.serve_scope = inner.cancel_scope
                            if self.stopping:
                                inner.cancel_scope.cancel()
                            self.handle = await inner.start(self.serve, self.config)
                            self.announce()
                            inner.start_soon(self.publish_status_forever)
                    finally:
                        outer.cancel_scope.cancel()
        finally:
            if self.timer is not None:
                self.timer.cancel()
        if self.ended_by_itself:
            log.error("%s: the service ended by itself", self.prog)
            return 1
        log.info("%s stopped", self.prog)
        return 0

    async def serve(self, config: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.serve_fn(config, task_status=task_status)
        self.ended_by_itself = not self.stopping
        assert self.serve_scope is not None
        self.serve_scope.cancel()  # the status publisher must not keep the process alive

    def announce(self) -> None:
        urls = urls_of(self.handle)
        parts = [f"{name} {url}" for name, url in urls.items()]
        message = f"{self.prog} started (pid {os.getpid()})" + (
            ": " + ", ".join(parts) if parts else ""
        )
        log.info("%s", message)
        self.write_run_file()
        if not self.detached:
            print(message, flush=True)
        daemon.notify_ready(message)

    def write_run_file(self) -> None:
        status: Any = None
        if hasattr(self.handle, "status"):
            try:
                status = self.handle.status()
            except Exception:
                log.exception("status() failed")
        urls = urls_of(self.handle)
        data = {
            "pid": os.getpid(),
            "role": self.role,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_at)),
            "config_source": self.source,
            "config_files": list(getattr(self.config, "files", ())),
            "api_url": urls.get("api"),
            "receiver_urls": {k[len("receiver "):]: v for k, v in urls.items()
                              if k.startswith("receiver ")},
            "status": status,
        }
        try:
            daemon.write_run_file(self.run_file, data)
        except (OSError, TypeError, ValueError) as exc:
            log.warning("cannot write %s: %s", self.run_file, exc)

    async def publish_status_forever(self) -> None:
        while True:
            await trio.sleep(STATUS_EVERY_SEC)
            self.write_run_file()

    async def watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if not self.stopping:
                    await self.reload()
                continue
            name = signal.Signals(signum).name
            if self.stopping:
                self.hard_exit(1, f"{name} again: exiting now")
            log.info("%s: stopping (at most %gs)", name, GRACE_SEC)
            self.stopping = True
            stop = getattr(self.handle, "stop", None)
            if callable(stop) and self.outer is not None:
                # A graceful stop first (servers finish their requests), then cancellation.
                stop()
                self.outer.start_soon(self.cancel_after, SOFT_STOP_SEC)
            elif self.serve_scope is not None:
                self.serve_scope.cancel()
            # If cancellation is stuck in a thread, trio cannot end: a timer thread ends it.
            why = f"{self.prog} did not stop within {GRACE_SEC:g}s; exiting"
            self.timer = threading.Timer(GRACE_SEC, self.hard_exit, args=(1, why))
            self.timer.daemon = True
            self.timer.start()

    async def cancel_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        if self.serve_scope is not None:
            log.info("graceful stop took over %gs: cancelling", seconds)
            self.serve_scope.cancel()

    def hard_exit(self, code: int, why: str) -> None:
        log.error("%s", why)
        daemon.remove_pid_file(self.pid_file)
        with contextlib.suppress(OSError):
            self.run_file.unlink()
        logging.shutdown()
        os._exit(code)

    async def reload(self) -> None:
        log.info("SIGHUP: reloading the config")
        try:
            new = self.load(self.source)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        if self.handle is None:
            log.warning("reload ignored: still starting")
            return
        try:
            await self.handle.reload(new)
        except FustorError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            return
        except Exception:
            log.exception("reload failed")
            return
        self.config = new
        level, _ = logging_of(new)
        set_level(level)
        self.write_run_file()
        log.info("config reloaded from %s", ", ".join(getattr(new, "files", ())) or "?")


def logging_of(config: Any) -> tuple[str, str | None]:
    lc = getattr(config, "logging", None)
    return getattr(lc, "level", "INFO"), getattr(lc, "file", None)


def urls_of(handle: Any) -> dict[str, str]:
    urls: dict[str, str] = {}
    api = getattr(handle, "api_url", None)
    if isinstance(api, str):
        urls["api"] = api
    rec = getattr(handle, "receiver_urls", None)
    if isinstance(rec, Mapping):
        for rid, url in rec.items():
            urls[f"receiver {rid}"] = str(url)
    return urls
