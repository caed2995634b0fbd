"""The shared command line of `fustor-fusion` and `fustor-agent`:
`start [-D] [--config PATH]`, `stop`, `status`, `reload`, `validate`, `--version`.

Exit codes: 0 ok; 1 failure (already running, could not stop, crashed); 2 bad config or usage;
3 `status` of a process that is not running; 7 `reload` of a process that is not running.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import trio

from fustor import __version__, daemon
from fustor.errors import ConfigError, FustorError
from fustor.logs import set_level, setup_logging

log = logging.getLogger(__name__)

C = TypeVar("C")

# After SIGTERM/SIGINT the serving tasks are cancelled; if they have not finished after this
# long (a blocking thread, a stuck peer) the process exits anyway. Below `stop`'s default wait.
GRACE_SEC = 8.0
STOP_TIMEOUT_SEC = 15.0
# With a handle that has `stop()`, it gets this long to finish on its own before cancellation.
SOFT_STOP_SEC = 3.0
STATUS_EVERY_SEC = 5.0


def run_cli(
    role: str,
    *,
    load: Callable[[str | None], C],
    serve: Callable[..., Awaitable[None]],
    describe: Callable[[C], dict[str, Any]] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the command; returns the exit code."""
    prog = f"fustor-{role}"
    parser = _parser(prog, role)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or usage errors (2)
        return int(exc.code or 0)
    cli = _Cli(role, prog, load, serve, describe, args)
    try:
        return cli.run()
    except KeyboardInterrupt:
        return 130


def _parser(prog: str, role: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=f"Fustor {role}.")
    p.add_argument("--version", action="version", version=f"{prog} {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config", metavar="PATH",
            help=f"a config file or directory (default: $FUSTOR_CONFIG, "
            f"else $FUSTOR_HOME/{role}-config/*.yaml)",
        )

    s = sub.add_parser("start", help="run in the foreground (or detached with -D)")
    s.add_argument("-D", "--daemon", action="store_true",
                   help=f"detach; log to $FUSTOR_HOME/logs/{role}.log")
    with_config(s)
    s = sub.add_parser("stop", help="stop the running process (SIGTERM, bounded wait)")
    s.add_argument("--timeout", type=float, default=STOP_TIMEOUT_SEC, metavar="SEC")
    s.add_argument("--force", action="store_true", help="SIGKILL if it does not stop in time")
    s = sub.add_parser("status", help="is it running; ports, views, pipes")
    with_config(s)
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s = sub.add_parser("reload", help="re-read the config in the running process (SIGHUP)")
    with_config(s)
    s = sub.add_parser("validate", help="check the config and print a summary")
    with_config(s)
    return p


class _Cli:
    def __init__(
        self, role: str, prog: str, load: Callable[[str | None], Any],
        serve: Callable[..., Awaitable[None]], describe: Callable[[Any], dict[str, Any]] | None,
        args: argparse.Namespace,
    ) -> None:
        self.role, self.prog, self.load, self.serve = role, prog, load, serve
        self.describe, self.args = describe, args
        self.pid_file = daemon.pid_path(role)
        self.run_file = daemon.run_path(role)

    def run(self) -> int:
        command: Callable[[], int] = getattr(self, f"cmd_{self.args.command}")
        return command()

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message}", file=sys.stderr)

    def load_config(self, path: str | None) -> Any:
        """The config, or None after printing the one-line error."""
        try:
            return self.load(path)
        except ConfigError as exc:
            self.error(str(exc))
            return None

    # ------------------------------------------------------------------ validate
    def cmd_validate(self) -> int:
        config = self.load_config(self.args.config)
        if config is None:
            return 2
        print(f"{self.prog}: config OK")
        _print_tree(self.summary(config), indent=1)
        return 0

    def summary(self, config: Any) -> dict[str, Any]:
        if self.describe is not None:
            return self.describe(config)
        return summarize(config)

    # ------------------------------------------------------------------ start
    def cmd_start(self) -> int:
        config_arg: str | None = self.args.config
        if config_arg:
            config_arg = str(Path(config_arg).expanduser().absolute())
        config = self.load_config(config_arg)
        if config is None:
            return 2
        other = daemon.read_pid(self.pid_file)
        if other is not None:
            self.error(
                f"already running (pid {other}, pid file {self.pid_file}); "
                f"stop it first with `{self.prog} stop`"
            )
            return 1
        level, log_file = _logging_of(config)
        try:
            if self.args.daemon:
                daemon.detach(self.pid_file, daemon.log_path(self.role))  # returns in the daemon
                setup_logging(level, file=log_file or daemon.log_path(self.role))
            else:
                setup_logging(level, file=log_file)
                if not daemon.write_pid_file(self.pid_file):
                    self.error(f"already running (pid {daemon.read_pid(self.pid_file)})")
                    return 1
        except OSError as exc:  # an unwritable FUSTOR_HOME or log file
            why = f"cannot start: {_oserror_text(exc)}"
            self.error(why)
            daemon.notify_failed(f"{self.prog}: error: {why}")
            daemon.remove_pid_file(self.pid_file)
            return 1
        source = config_arg or os.environ.get("FUSTOR_CONFIG") or None
        runner = _Runner(self, config, source)
        try:
            return trio.run(runner.main)
        except BaseException as exc:  # noqa: B036 - one line per failure, never a traceback
            code, message = _explain(exc)
            if code == 130:
                return 0
            if message is None:
                log.exception("%s crashed", self.prog)
                message = f"crashed: {exc!r}"
            else:
                log.debug("%s stopped on an error", self.prog, exc_info=exc)
            log.error("%s", message)
            if not self.args.daemon:
                self.error(message)
            daemon.notify_failed(f"{self.prog}: error: {message}", code)
            return code
        finally:
            daemon.remove_pid_file(self.pid_file)
            with contextlib.suppress(FileNotFoundError):
                if (daemon.read_run_file(self.run_file) or {}).get("pid") == os.getpid():
                    self.run_file.unlink()

    # ------------------------------------------------------------------ stop / reload
    def cmd_stop(self) -> int:
        pid = daemon.read_pid(self.pid_file)
        if pid is None:
            print(f"{self.prog}: not running")
            return 0
        print(f"{self.prog}: stopping pid {pid} ...", flush=True)
        if daemon.stop_pid(self.pid_file, self.args.timeout, force=self.args.force):
            print(f"{self.prog}: stopped")
            return 0
        self.error(
            f"pid {pid} did not stop within {self.args.timeout:g}s "
            f"(see {daemon.log_path(self.role)}); `{self.prog} stop --force` kills it"
        )
        return 1

    def cmd_reload(self) -> int:
        pid = daemon.read_pid(self.pid_file)
        if pid is None:
            self.error("not running")
            return 7
        run = daemon.read_run_file(self.run_file) or {}
        source = self.args.config or run.get("config_source")
        if self.load_config(source) is None:
            print(f"{self.prog}: not reloading: the running process keeps its config",
                  file=sys.stderr)
            return 2
        os.kill(pid, signal.SIGHUP)
        print(f"{self.prog}: reload requested (pid {pid}); the log shows what changed")
        return 0

    # ------------------------------------------------------------------ status
    def cmd_status(self) -> int:
        pid = daemon.read_pid(self.pid_file)
        if pid is None:
            if self.pid_file.exists():
                print(f"{self.prog}: not running (stale pid file {self.pid_file})")
            else:
                print(f"{self.prog}: not running")
            return 3
        run = daemon.read_run_file(self.run_file) or {}
        if run.get("pid") != pid:
            run = {}
        info: dict[str, Any] = {"state": "running", "pid": pid}
        for key in ("started_at", "config_files", "api_url", "receiver_urls"):
            if run.get(key):
                info[key] = run[key]
        source = self.args.config or run.get("config_source")
        config = None
        with contextlib.suppress(FustorError):
            config = self.load(source)
        if run.get("api_url"):
            info.update(self.query_management(str(run["api_url"]), config))
        if run.get("status"):
            info["status"] = run["status"]
        elif "views" not in info and config is not None:
            info["config"] = self.summary(config)
        if self.args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            _print_status(self.prog, info)
        return 0

    def query_management(self, api_url: str, config: Any) -> dict[str, Any]:
        import httpx  # only `status` of Fusion needs it

        url = api_url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
        keys = getattr(config, "management_api_keys", ()) or ()
        headers = {"X-API-Key": keys[0]} if keys else {}
        out: dict[str, Any] = {}
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=3.0) as client:
                for what in ("views", "pipes"):
                    r = client.get(f"/api/v1/management/{what}")
                    if r.status_code == 200:
                        body = r.json()
                        out[what] = body.get(what, body) if isinstance(body, dict) else body
                    else:
                        out[f"{what}_error"] = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            out["api_error"] = f"{url}: {exc}"
        return out


class _Runner:
    """Owns the trio side of `start`: serve, signals, reload, the run file."""

    def __init__(self, cli: _Cli, config: Any, source: str | None) -> None:
        self.cli, self.config, self.source = cli, config, source
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
            log.error("%s: the service ended by itself", self.cli.prog)
            return 1
        log.info("%s stopped", self.cli.prog)
        return 0

    async def serve(self, config: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.cli.serve(config, task_status=task_status)
        self.ended_by_itself = not self.stopping
        assert self.serve_scope is not None
        self.serve_scope.cancel()  # the status publisher must not keep the process alive

    def announce(self) -> None:
        urls = _urls(self.handle)
        parts = [f"{name} {url}" for name, url in urls.items()]
        message = f"{self.cli.prog} started (pid {os.getpid()})" + (
            ": " + ", ".join(parts) if parts else ""
        )
        log.info("%s", message)
        self.write_run_file()
        if not self.cli.args.daemon:
            print(message, flush=True)
        daemon.notify_ready(message)

    def write_run_file(self) -> None:
        status: Any = None
        if hasattr(self.handle, "status"):
            try:
                status = self.handle.status()
            except Exception:
                log.exception("status() failed")
        urls = _urls(self.handle)
        data = {
            "pid": os.getpid(),
            "role": self.cli.role,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started_at)),
            "config_source": self.source,
            "config_files": list(getattr(self.config, "files", ())),
            "api_url": urls.get("api"),
            "receiver_urls": {k[len("receiver "):]: v for k, v in urls.items()
                              if k.startswith("receiver ")},
            "status": status,
        }
        try:
            daemon.write_run_file(self.cli.run_file, data)
        except (OSError, TypeError, ValueError) as exc:
            log.warning("cannot write %s: %s", self.cli.run_file, exc)

    async def publish_status_forever(self) -> None:
        while True:
            await trio.sleep(STATUS_EVERY_SEC)
            self.write_run_file()

    async def watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
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
            why = f"{self.cli.prog} did not stop within {GRACE_SEC:g}s; exiting"
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
        daemon.remove_pid_file(self.cli.pid_file)
        with contextlib.suppress(OSError):
            self.cli.run_file.unlink()
        logging.shutdown()
        os._exit(code)

    async def reload(self) -> None:
        log.info("SIGHUP: reloading the config")
        try:
            new = self.cli.load(self.source)
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
        level, _ = _logging_of(new)
        set_level(level)
        self.write_run_file()
        log.info("config reloaded from %s", ", ".join(getattr(new, "files", ())) or "?")


# ---------------------------------------------------------------------------- helpers
def _print_status(prog: str, info: dict[str, Any]) -> None:
    """The human form of `status`: one line per URL, view and pipe; details as a tree."""
    since = f", since {info['started_at']}" if info.get("started_at") else ""
    print(f"{prog}: running (pid {info['pid']}{since})")
    for f in info.get("config_files") or ():
        print(f"  config: {f}")
    if info.get("api_url"):
        print(f"  api: {info['api_url']}")
    for rid, url in (info.get("receiver_urls") or {}).items():
        print(f"  receiver {rid}: {url}")
    views, pipes = info.get("views"), info.get("pipes")
    for v in views if isinstance(views, list) else ():
        if not isinstance(v, Mapping):
            continue
        states = ", ".join(f"{pid}: {p.get('state', '?') if isinstance(p, Mapping) else p}"
                           for pid, p in (v.get("pipes") or {}).items())
        ready = "ready" if v.get("ready") else "not ready"
        print(f"  view {v.get('id')}: {ready}" + (f" ({states})" if states else ""))
    for p in pipes if isinstance(pipes, list) else ():
        if not isinstance(p, Mapping):
            continue
        print(f"  pipe {p.get('id')}: receiver {p.get('receiver')} -> "
              f"{', '.join(p.get('views') or ())}; leader {p.get('leader') or 'none'}, "
              f"{p.get('sessions', 0)} session(s), {p.get('events_applied', 0)} events applied")
    rest = {k: v for k, v in info.items() if k.endswith("_error") or k == "config"}
    if not isinstance(views, list) and isinstance(info.get("status"), Mapping):
        rest["status"] = {k: v for k, v in info["status"].items()
                          if k not in ("api_url", "receiver_urls")}
    _print_tree(rest, indent=1)


def _logging_of(config: Any) -> tuple[str, str | None]:
    lc = getattr(config, "logging", None)
    return getattr(lc, "level", "INFO"), getattr(lc, "file", None)


def _urls(handle: Any) -> dict[str, str]:
    urls: dict[str, str] = {}
    api = getattr(handle, "api_url", None)
    if isinstance(api, str):
        urls["api"] = api
    rec = getattr(handle, "receiver_urls", None)
    if isinstance(rec, Mapping):
        for rid, url in rec.items():
            urls[f"receiver {rid}"] = str(url)
    return urls


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _explain(exc: BaseException) -> tuple[int, str | None]:
    """Exit code and a one-line message for a failure, or message None for a real bug."""
    leaves = _leaves(exc)
    if all(isinstance(e, KeyboardInterrupt) for e in leaves):
        return 130, "interrupted"
    if all(isinstance(e, ConfigError) for e in leaves):
        return 2, "; ".join(str(e) for e in leaves)
    if all(isinstance(e, FustorError | OSError) for e in leaves):
        return 1, "; ".join(_oserror_text(e) for e in leaves)
    return 1, None


def _oserror_text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{where}"
    return str(e)


def summarize(config: Any) -> dict[str, Any]:
    """A generic summary of a config dataclass: files, scalars, and each section's ids."""
    out: dict[str, Any] = {}
    if not dataclasses.is_dataclass(config):
        return {"config": repr(config)}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "files":
            out["files"] = list(value)
        elif isinstance(value, Mapping):
            out[f.name] = {k: _brief(v) for k, v in value.items()}
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            out[f.name] = value
    return out


def _brief(item: Any) -> str:
    """One line for a section entry: its scalar and list fields except secrets."""
    if not dataclasses.is_dataclass(item):
        return str(item)
    bits = []
    for f in dataclasses.fields(item):
        if f.name in ("id", "key", "api_keys", "driver_params"):
            continue
        v = getattr(item, f.name)
        if isinstance(v, tuple):
            v = "[" + ", ".join(map(str, v)) + "]"
        bits.append(f"{f.name}={v}")
    keys = getattr(item, "api_keys", None)
    if keys:
        bits.append(f"{len(keys)} api key(s)")
    return ", ".join(bits)


def _print_tree(data: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(data, Mapping):
        for k, v in data.items():
            if isinstance(v, Mapping | list) and v:
                print(f"{pad}{k}:")
                _print_tree(v, indent + 1)
            else:
                print(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, Mapping):
                print(f"{pad}- " + ", ".join(f"{k}={_scalar(v)}" for k, v in item.items()))
            else:
                print(f"{pad}- {_scalar(item)}")
    else:
        print(f"{pad}{_scalar(data)}")


def _scalar(v: Any) -> str:
    if isinstance(v, Mapping | list):
        return json.dumps(v, default=str)
    return str(v)
