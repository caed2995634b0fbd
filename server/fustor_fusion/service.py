"""`serve_fusion(config, *, task_status)`: hypercorn for the API port and one per receiver, plus
the janitor (session expiry, view expiry, job pruning). `task_status.started(FusionHandle)`;
the handle reloads config without restarting unchanged parts and reports status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio

from fustor.config import FusionConfig
from fustor.errors import ConfigError
from fustor_fusion.app import create_app
from fustor_fusion.receiver import create_receiver_app
from fustor_fusion.state import FusionState

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_SEC = 2.0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _connectable(url: str) -> str:
    # A wildcard bind is reachable on loopback; report that so the URL can be used as is.
    return url.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


@dataclass(eq=False)
class _Server:
    name: str
    host: str
    port: int                      # as configured (0: any free port)
    app: QuartTrio
    url: str = ""
    shutdown: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)


class FusionHandle:
    """What `serve_fusion` hands its caller: URLs, `reload(config)`, `status()`, `stop()`."""

    def __init__(self, state: FusionState, nursery: trio.Nursery) -> None:
        self.state = state
        self._nursery = nursery
        self._api: _Server | None = None
        self._receivers: dict[str, _Server] = {}
        self._lock = trio.Lock()
        self._janitor = trio.CancelScope()

    @property
    def api_url(self) -> str:
        return self._api.url if self._api else ""

    @property
    def receiver_urls(self) -> dict[str, str]:
        return {rid: s.url for rid, s in self._receivers.items()}

    # ------------------------------------------------------------------ servers
    async def _start(self, srv: _Server, key: str) -> None:
        cfg = HyperConfig()
        cfg.bind = [_bind(srv.host, srv.port)]
        cfg.graceful_timeout = GRACEFUL_TIMEOUT_SEC
        cfg.accesslog = None
        cfg.errorlog = logging.getLogger("hypercorn.error")
        cfg.keep_alive_timeout = 75.0     # agents and mounts keep one connection open
        try:
            binds = await self._nursery.start(_run_server, srv, cfg)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {cfg.bind[0]}: {exc.strerror or exc}",
                              key=key) from exc
        srv.url = _connectable(binds[0]) if binds else ""
        log.info("%s listening on %s", srv.name, binds[0] if binds else cfg.bind[0])

    async def _stop(self, srv: _Server) -> None:
        srv.shutdown.set()
        with trio.move_on_after(GRACEFUL_TIMEOUT_SEC + 1.0):
            await srv.done.wait()
        srv.cancel.cancel()
        await srv.done.wait()
        log.info("%s stopped (%s)", srv.name, srv.url)

    async def _start_api(self, config: FusionConfig) -> None:
        srv = _Server("Fusion API", config.host, config.port, create_app(self.state))
        await self._start(srv, "port")
        self._api = srv

    async def _start_receiver(self, rid: str, config: FusionConfig) -> None:
        rc = config.receivers[rid]
        srv = _Server(f"receiver {rid}", rc.host, rc.port, create_receiver_app(self.state, rid))
        await self._start(srv, f"receivers.{rid}.port")
        self._receivers[rid] = srv

    # ------------------------------------------------------------------ public
    async def reload(self, config: FusionConfig) -> None:
        """Apply `config`: views/pipes/keys in the state; receivers started/stopped/rebound."""
        async with self._lock:
            old = self.state.config
            changes = self.state.apply_config(config)
            for rid, srv in list(self._receivers.items()):
                rc = config.receivers.get(rid)
                if rc is None or (rc.host, rc.port) != (srv.host, srv.port):
                    del self._receivers[rid]
                    await self._stop(srv)
                    changes.setdefault("receivers_stopped", []).append(rid)
            for rid, rc in config.receivers.items():
                if rid not in self._receivers:
                    await self._start_receiver(rid, config)
                    changes.setdefault("receivers_started", []).append(rid)
                else:
                    self._receivers[rid].app.config["MAX_CONTENT_LENGTH"] = rc.max_batch_bytes
            if (config.host, config.port) != (old.host, old.port) and self._api is not None:
                api, self._api = self._api, None
                await self._stop(api)
                await self._start_api(config)
                changes["api_rebound"] = [self.api_url]
            log.info("configuration reloaded: %s",
                     "; ".join(f"{k}: {', '.join(v)}" for k, v in changes.items()) or "no change")

    def status(self) -> dict[str, Any]:
        return {"api_url": self.api_url, "receiver_urls": self.receiver_urls,
                **self.state.status()}

    def stop(self) -> None:
        """Begin a graceful shutdown: servers finish (at most GRACEFUL_TIMEOUT_SEC), janitor ends."""
        for srv in [self._api, *self._receivers.values()]:
            if srv is not None:
                srv.shutdown.set()
        self._janitor.cancel()


async def _run_server(srv: _Server, cfg: HyperConfig, *,
                      task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    try:
        with srv.cancel:
            await serve(srv.app, cfg, shutdown_trigger=srv.shutdown.wait,
                        task_status=task_status)
    finally:
        srv.done.set()


async def _janitor_forever(state: FusionState, tick_sec: float, scope: trio.CancelScope) -> None:
    with scope:
        while True:
            await trio.sleep(tick_sec)
            try:
                state.tick()
            except Exception:
                log.exception("janitor: housekeeping failed (will retry)")


async def serve_fusion(
    config: FusionConfig,
    *,
    task_status: trio.TaskStatus[FusionHandle] = trio.TASK_STATUS_IGNORED,
    tick_sec: float = 1.0,
    state_factory: Callable[[FusionConfig], FusionState] = FusionState,
) -> None:
    """Run Fusion until cancelled (or `handle.stop()`)."""
    state = state_factory(config)
    async with trio.open_nursery() as nursery:
        handle = FusionHandle(state, nursery)
        await handle._start_api(config)
        for rid in config.receivers:
            await handle._start_receiver(rid, config)
        nursery.start_soon(_janitor_forever, state, tick_sec, handle._janitor)
        log.info("Fusion ready: %d view(s), %d pipe(s), %d receiver(s)",
                 len(state.views), len(state.pipes), len(config.receivers))
        task_status.started(handle)
