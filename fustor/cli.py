"""The shared command line of `fustor-fusion` and `fustor-agent`:
`start [-D] [--config PATH]`, `stop`, `status`, `reload`, `validate`, `--version`.

Exit codes: 0 ok; 1 failure (already running, could not stop, crashed); 2 bad config or usage;
3 `status` of a process that is not running; 7 `reload` of a process that is not running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from fustor import __version__, daemon
from fustor.cli_text import print_status, print_tree, summarize
from fustor.errors import ConfigError, FustorError
from fustor.logs import setup_logging
from fustor.supervisor import Supervisor, logging_of

log = logging.getLogger(__name__)

C = TypeVar("C")

STOP_TIMEOUT_SEC = 15.0  # `stop` waits this long (the process itself gives up after GRACE_SEC)


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
        print_tree(self.summary(config), indent=1)
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
        level, log_file = logging_of(config)
        if log_file:  # before -D moves to '/'
            log_file = str(Path(log_file).expanduser().absolute())
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
        supervisor = Supervisor(self.role, load=self.load, serve=self.serve, config=config,
                                source=source, detached=self.args.daemon)
        try:
            return trio.run(supervisor.main)
        except BaseException as exc:  # noqa: B036 - one line per failure, never a traceback
            code, message = _explain(exc)
            if code == 130:
                return 0
            if message is None:
                log.exception("%s crashed", self.prog)
                message = f"crashed: {exc!r}"
            else:
                log.debug("%s stopped on an error", self.prog, exc_info=exc)
            if self.args.daemon or log_file:
                log.error("%s", message)
            if not self.args.daemon:  # (logging to stderr too would say it twice)
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
            print_status(self.prog, info)
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


# ---------------------------------------------------------------------------- helpers
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




def missing_extra(program: str, extra: str, exc: ImportError) -> int:
    """The role's packages are not installed (e.g. `fustor[agent]` on a Fusion-only host):
    one line saying what to install, exit code 2, no traceback."""
    print(
        f"{program}: error: this host lacks the packages of the {extra!r} role "
        f"({exc}); install them with: pip install 'fustor[{extra}]'",
        file=sys.stderr,
    )
    return 2
