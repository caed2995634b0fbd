"""`serve_fusion(config, *, task_status)`: hypercorn for the API port and one per receiver, plus
the janitor (session expiry, view expiry, job pruning). `task_status.started(FusionHandle)`;
the handle reloads config without restarting unchanged parts and reports status.
"""

from __future__ import annotations

import gc
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from quart_trio import QuartTrio

from fustor.config import FusionConfig
from fustor.errors import ConfigError
from fustor_fusion.app import create_app
from fustor_fusion.receiver import create_receiver_app
from fustor_fusion.state import FusionState

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_SEC = 2.0
SWITCH_INTERVAL_SEC = 0.001
# A 10,000-row batch is 20,000 tracked row objects alive until applied: with CPython's default
# (700, 10, 10) they reach the old generation and trigger full collections every few batches.
# Measured snapshot ingest over HTTP (tests/server/fusion_ingest.py): +5-10% cold, +15-30% hot.
GC_THRESHOLDS = (10_000, 50, 50)
# hypercorn's own "Running on ..." lines duplicate ours; keep its warnings and errors.
_HTTP_LOG = logging.getLogger("fustor_fusion.http")
_HTTP_LOG.setLevel(logging.WARNING)


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

    def __init__(self, state: FusionState) -> None:
        self.state = state
        self._nursery: trio.Nursery
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
    @staticmethod
    def _bind(srv: _Server, key: str) -> tuple[HyperConfig, Sockets]:
        """Bind the server's socket now (a busy port is one plain ConfigError, not a group)."""
        cfg = HyperConfig()
        cfg.bind = [_bind(srv.host, srv.port)]
        cfg.graceful_timeout = GRACEFUL_TIMEOUT_SEC
        cfg.accesslog = None
        cfg.errorlog = _HTTP_LOG
        cfg.keep_alive_timeout = 75.0     # agents and mounts keep one connection open
        # Like hypercorn's Config.create_sockets, but the socket is closed when bind fails.
        sock = socket.socket(socket.AF_INET6 if ":" in srv.host else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((srv.host, srv.port))
            sock.setblocking(False)
            sock.listen(cfg.backlog)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {cfg.bind[0]}: {exc.strerror or exc}",
                              key=key) from exc
        return cfg, Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])

    async def _start(self, srv: _Server, bound: tuple[HyperConfig, Sockets]) -> None:
        cfg, sockets = bound
        binds = await self._nursery.start(_run_server, srv, cfg, sockets)
        srv.url = _connectable(binds[0]) if binds else ""
        log.info("%s listening on %s", srv.name, binds[0] if binds else cfg.bind[0])

    async def _stop(self, srv: _Server) -> None:
        srv.shutdown.set()
        with trio.move_on_after(GRACEFUL_TIMEOUT_SEC + 1.0):
            await srv.done.wait()
        srv.cancel.cancel()
        await srv.done.wait()
        log.info("%s stopped (%s)", srv.name, srv.url)

    def _api_server(self, config: FusionConfig) -> tuple[_Server, tuple[HyperConfig, Sockets]]:
        srv = _Server("Fusion API", config.host, config.port, create_app(self.state))
        return srv, self._bind(srv, "port")

    def _receiver_server(self, rid: str, config: FusionConfig
                         ) -> tuple[_Server, tuple[HyperConfig, Sockets]]:
        rc = config.receivers[rid]
        srv = _Server(f"receiver {rid}", rc.host, rc.port, create_receiver_app(self.state, rid, rc))
        return srv, self._bind(srv, f"receivers.{rid}.port")

    async def _start_api(self, srv: _Server, bound: tuple[HyperConfig, Sockets]) -> None:
        await self._start(srv, bound)
        self._api = srv

    async def _start_receiver(self, rid: str, srv: _Server,
                              bound: tuple[HyperConfig, Sockets]) -> None:
        await self._start(srv, bound)
        self._receivers[rid] = srv

    # ------------------------------------------------------------------ public
    async def reload(self, config: FusionConfig) -> None:
        """Apply `config`: views/pipes/keys in the state; receivers started/stopped/rebound.
        New ports are bound first: if one is busy, ConfigError and nothing changed."""
        async with self._lock:
            old = self.state.config
            stop: list[str] = []
            start: dict[str, tuple[_Server, tuple[HyperConfig, Sockets]]] = {}
            api_moved = (config.host, config.port) != (old.host, old.port)
            bound: list[Sockets] = []
            try:
                for rid, srv in self._receivers.items():
                    rc = config.receivers.get(rid)
                    if rc is None or (rc.host, rc.port) != (srv.host, srv.port):
                        stop.append(rid)
                for rid in config.receivers:
                    if rid not in self._receivers or rid in stop:
                        start[rid] = self._receiver_server(rid, config)
                        bound.append(start[rid][1][1])
                new_api = self._api_server(config) if api_moved else None
                if new_api is not None:
                    bound.append(new_api[1][1])
            except BaseException:
                _close(bound)
                raise
            changes = self.state.apply_config(config)
            for rid in stop:
                await self._stop(self._receivers.pop(rid))
            if stop:
                changes["receivers_stopped"] = stop
            for rid, (srv, b) in start.items():
                await self._start_receiver(rid, srv, b)
            if start:
                changes["receivers_started"] = list(start)
            for rid, rc in config.receivers.items():
                self._receivers[rid].app.config["MAX_CONTENT_LENGTH"] = rc.max_batch_bytes
            if new_api is not None and self._api is not None:
                await self._stop(self._api)
                await self._start_api(*new_api)
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


def _close(bound: list[Sockets]) -> None:
    for socks in bound:
        for sock in socks.insecure_sockets:
            sock.close()


async def _run_server(srv: _Server, cfg: HyperConfig, sockets: Sockets, *,
                      task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    try:
        with srv.cancel:
            await worker_serve(wrap_app(srv.app, cfg.wsgi_max_body_size, None), cfg,
                               sockets=sockets, shutdown_trigger=srv.shutdown.wait,
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
    old_switch = sys.getswitchinterval()
    old_gc = gc.get_threshold()
    try:
        # Batches are decoded in a worker thread; a short GIL switch interval keeps queries on
        # the trio thread responsive meanwhile (p99 roughly halved under ingest, measured).
        sys.setswitchinterval(SWITCH_INTERVAL_SEC)
        gc.set_threshold(*GC_THRESHOLDS)
        await _serve(config, task_status, tick_sec, state_factory)
    finally:
        sys.setswitchinterval(old_switch)
        gc.set_threshold(*old_gc)


async def _serve(config: FusionConfig, task_status: trio.TaskStatus[FusionHandle],
                 tick_sec: float, state_factory: Callable[[FusionConfig], FusionState]) -> None:
    state = state_factory(config)
    handle = FusionHandle(state)
    # Every port is bound before any task starts: a busy port fails plainly and at once.
    bound: list[Sockets] = []
    try:
        api = handle._api_server(config)
        bound.append(api[1][1])
        receivers: dict[str, tuple[_Server, tuple[HyperConfig, Sockets]]] = {}
        for rid in config.receivers:
            receivers[rid] = handle._receiver_server(rid, config)
            bound.append(receivers[rid][1][1])
    except BaseException:
        _close(bound)
        raise
    async with trio.open_nursery() as nursery:
        handle._nursery = nursery
        await handle._start_api(*api)
        for rid, (srv, socks) in receivers.items():
            await handle._start_receiver(rid, srv, socks)
        nursery.start_soon(_janitor_forever, state, tick_sec, handle._janitor)
        log.info("Fusion ready: %d view(s), %d pipe(s), %d receiver(s)",
                 len(state.views), len(state.pipes), len(config.receivers))
        task_status.started(handle)
