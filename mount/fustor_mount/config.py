"""The mount's settings: command line > environment (FUSTOR_API_KEY, FUSTOR_URL) > config
file (`$FUSTOR_HOME/mount.yaml`, or --config PATH) > defaults. A bad file raises ConfigError
naming the file and the key, before anything is mounted.

```yaml
url: http://fusion-host:8101
view: unified-view
api_key: external-read-only-key      # or api_key_file: /etc/fustor/view.key
options: [allow_other]               # extra mount options
attr_timeout: 60                     # seconds, at most (also entry_timeout, dir_timeout)
attr_timeout_min: 3                  # at least (recently changed entries: a tenth of their age)
realtime_find: true
find_wait_sec: 2.0
logging: {level: INFO}
```
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fustor.config import LOG_LEVELS, fustor_home
from fustor.errors import ConfigError
from fustor_mount.operations import CacheConfig

DEFAULT_URL = "http://127.0.0.1:8101"
# -o options that configure the mount itself rather than the kernel.
OWN_OPTIONS = ("attr_timeout", "attr_timeout_min", "entry_timeout", "negative_timeout",
               "dir_timeout", "prefetch_entries")
# Options fustor-mount sets itself, or that would contradict a read-only metadata view.
REFUSED_OPTIONS = ("rw", "fsname", "subtype")


@dataclass(frozen=True)
class MountConfig:
    mountpoint: str
    url: str = DEFAULT_URL
    view: str | None = None
    api_key: str | None = None
    options: tuple[str, ...] = ()
    detach: bool = False
    realtime_find: bool = True
    find_wait_sec: float = 2.0
    find_rate: float = 5.0  # realtime finds per second, on average
    find_burst: float = 20.0
    timeout_sec: float = 10.0  # one request to Fusion, at most
    connect_timeout_sec: float = 3.0
    cache: CacheConfig = field(default_factory=CacheConfig)
    log_level: str = "INFO"
    log_file: str | None = None
    file: str | None = None

    def fuse_options(self, view: str) -> set[str]:
        opts = {"ro", "default_permissions", f"fsname=fustor:{view}", "subtype=fustor"}
        opts.update(self.options)
        return opts


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit).expanduser() if explicit else fustor_home() / "mount.yaml"


def _read(path: Path, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError("no such config file", file=str(path))
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top", file=str(path))
    return data


class _File:
    """Typed access to the config file's keys; unknown keys are errors (typos)."""

    KEYS = {
        "url": str, "view": str, "api_key": str, "api_key_file": str, "options": (list, str),
        "realtime_find": bool, "find_wait_sec": float, "find_rate": float, "find_burst": float,
        "timeout_sec": float, "connect_timeout_sec": float, "entry_timeout": float,
        "attr_timeout": float, "attr_timeout_min": float, "negative_timeout": float,
        "dir_timeout": float,
        "page_size": int, "prefetch_entries": int, "max_cached_entries": int, "logging": dict,
    }

    def __init__(self, data: Mapping[str, Any], file: str | None) -> None:
        self.data = data
        self.file = file
        for key in data:
            if key not in self.KEYS:
                raise ConfigError(f"unknown key (known: {', '.join(sorted(self.KEYS))})",
                                  file=file, key=str(key))

    def get(self, key: str) -> Any:
        v = self.data.get(key)
        if v is None:
            return None
        kind = self.KEYS[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(v, kinds) or (kind in (int, float) and isinstance(v, bool)):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"expected {names}, got {type(v).__name__} ({v!r})", file=self.file, key=key)
        if kind in (int, float) and v < 0:
            raise ConfigError(f"must not be negative, got {v!r}", file=self.file, key=key)
        return v


def _split_options(raw: list[str]) -> list[str]:
    out: list[str] = []
    for chunk in raw:
        out.extend(o.strip() for o in chunk.split(",") if o.strip())
    return out


def _read_key_file(path: str, where: str) -> str:
    try:
        key = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}", key=where) from exc
    if not key:
        raise ConfigError(f"the API key file {path} is empty", key=where)
    return key


def load_mount_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> MountConfig:
    """Merge the parsed command line (cli.py), the environment and the config file."""
    env = os.environ if env is None else env
    path = config_path(args.config)
    f = _File(_read(path, required=args.config is not None), str(path))

    key: str | None = args.api_key
    if key is None and args.api_key_file:
        key = _read_key_file(args.api_key_file, "--api-key-file")
    if key is None and env.get("FUSTOR_API_KEY"):
        key = env["FUSTOR_API_KEY"]
    if key is None and f.get("api_key"):
        key = f.get("api_key")
    if key is None and f.get("api_key_file"):
        key = _read_key_file(f.get("api_key_file"), f"{path}: api_key_file")

    opts: list[str] = []
    fo = f.get("options")
    if fo is not None:
        opts += _split_options([fo] if isinstance(fo, str) else [str(o) for o in fo])
    opts += _split_options(args.options or [])
    own: dict[str, float] = {}
    fuse_opts: list[str] = []
    for o in opts:
        name, _, value = o.partition("=")
        if name in OWN_OPTIONS:
            try:
                own[name] = float(value)
            except ValueError:
                raise ConfigError(f"-o {name}: expected a number, got {value!r}") from None
        elif name == "rw":
            raise ConfigError("-o rw: the mount is read-only (Fusion holds metadata only)")
        elif name in REFUSED_OPTIONS:
            raise ConfigError(f"-o {o}: fustor-mount sets {name} itself (fsname=fustor:<view>, subtype=fustor)")
        elif name and o not in fuse_opts:
            fuse_opts.append(o)

    def num(name: str, default: float) -> float:
        if name in own:
            return own[name]
        v = f.get(name)
        return default if v is None else float(v)

    d = CacheConfig()
    attr = num("attr_timeout", d.attr_timeout)
    cache = CacheConfig(
        entry_timeout=num("entry_timeout", attr),
        attr_timeout=attr,
        attr_timeout_min=num("attr_timeout_min", d.attr_timeout_min),
        negative_timeout=num("negative_timeout", d.negative_timeout),
        dir_timeout=num("dir_timeout", attr),
        page_size=int(f.get("page_size") or d.page_size),
        prefetch_entries=int(num("prefetch_entries", d.prefetch_entries)),
        max_entries=int(f.get("max_cached_entries") or d.max_entries),
        stats_timeout=min(d.stats_timeout, max(attr, 0.1)),
    )
    if cache.page_size < 1:
        raise ConfigError("must be at least 1", file=str(path), key="page_size")
    if cache.prefetch_entries < 0:
        raise ConfigError("must be 0 (off) or more", file=str(path), key="prefetch_entries")

    logging_cfg = f.get("logging") or {}
    level = str(args.log_level or logging_cfg.get("level") or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"expected one of {', '.join(LOG_LEVELS)}, got {level!r}", key="logging.level")
    realtime = f.get("realtime_find")
    url = args.url or env.get("FUSTOR_URL") or f.get("url") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"expected an http:// or https:// URL, got {url!r}", key="url")
    return MountConfig(
        mountpoint=os.path.abspath(os.path.expanduser(args.mountpoint)),
        url=url,
        view=args.view or f.get("view"),
        api_key=key,
        options=tuple(fuse_opts),
        detach=bool(args.detach),
        realtime_find=False if args.no_realtime_find else (True if realtime is None else realtime),
        find_wait_sec=num("find_wait_sec", 2.0),
        find_rate=num("find_rate", 5.0),
        find_burst=num("find_burst", 20.0),
        timeout_sec=num("timeout_sec", 10.0) or 10.0,
        connect_timeout_sec=num("connect_timeout_sec", 3.0) or 3.0,
        cache=cache,
        log_level=level,
        log_file=logging_cfg.get("file"),
        file=str(path) if f.data else None,
    )
