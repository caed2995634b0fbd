"""YAML → typed config for Fusion and the agent.

Files: `$FUSTOR_HOME/{fusion,agent}-config/*.yaml` (default.yaml first, others merged; a
duplicate id across files is an error), or one file from `FUSTOR_CONFIG`, or `--config PATH`
(which wins). Every key has a type, a default and a check; a bad file raises ConfigError naming
the file and the key path, before anything is started.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from fustor.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# ---------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    file: str | None = None


@dataclass(frozen=True)
class ReceiverKey:
    key: str
    pipe_id: str


@dataclass(frozen=True)
class ReceiverConfig:
    id: str
    driver: str = "http"
    host: str = "0.0.0.0"
    port: int = 18888
    api_keys: tuple[ReceiverKey, ...] = ()
    max_batch_events: int = 20000
    max_batch_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class ViewParams:
    hot_file_threshold: float = 60.0
    max_tree_items: int = 100_000
    tombstone_ttl_sec: float = 3600.0
    suspect_ttl_sec: float = 60.0


@dataclass(frozen=True)
class ViewConfig:
    id: str
    driver: str = "fs"
    api_keys: tuple[str, ...] = ()
    driver_params: ViewParams = field(default_factory=ViewParams)


@dataclass(frozen=True)
class FusionPipeConfig:
    id: str
    receiver: str
    views: tuple[str, ...]
    audit_interval_sec: float = 600.0
    full_audit_interval_sec: float = 7 * 86400.0
    sentinel_interval_sec: float = 120.0
    session_timeout_seconds: float | None = None


@dataclass(frozen=True)
class FusionConfig:
    host: str = "0.0.0.0"
    port: int = 8101
    session_timeout_seconds: float = 30.0
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    management_api_keys: tuple[str, ...] = ()
    receivers: Mapping[str, ReceiverConfig] = field(default_factory=dict)
    views: Mapping[str, ViewConfig] = field(default_factory=dict)
    pipes: Mapping[str, FusionPipeConfig] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def pipe_timeout(self, pipe_id: str) -> float:
        p = self.pipes[pipe_id].session_timeout_seconds
        return self.session_timeout_seconds if p is None else p


@dataclass(frozen=True)
class SourceParams:
    exclude: tuple[str, ...] = ()
    max_scan_workers: int = 4
    batch_size: int = 10000
    coalesce_sec: float = 0.2


@dataclass(frozen=True)
class SourceConfig:
    id: str
    uri: str
    driver: str = "fs"
    driver_params: SourceParams = field(default_factory=SourceParams)


@dataclass(frozen=True)
class SenderConfig:
    id: str
    uri: str
    key: str
    driver: str = "fusion"
    timeout_sec: float = 30.0


@dataclass(frozen=True)
class AgentPipeConfig:
    id: str
    source: str
    sender: str


@dataclass(frozen=True)
class AgentConfig:
    agent_id: str
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    buffer_events: int = 200_000
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    senders: Mapping[str, SenderConfig] = field(default_factory=dict)
    pipes: Mapping[str, AgentPipeConfig] = field(default_factory=dict)
    files: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- locations
def fustor_home() -> Path:
    return Path(os.environ.get("FUSTOR_HOME") or Path.home() / ".fustor")


def config_files(role: str, explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """The files to read for `role` ('fusion' or 'agent'), by precedence:
    `--config` > `FUSTOR_CONFIG` > `$FUSTOR_HOME/<role>-config/*.yaml` (default.yaml first)."""
    chosen = explicit or os.environ.get("FUSTOR_CONFIG")
    if chosen:
        p = Path(chosen).expanduser()
        if p.is_dir():
            files = _dir_files(p)
            if not files:
                raise ConfigError("no *.yaml files in this directory", file=str(p))
            return files
        if not p.is_file():
            raise ConfigError("no such config file", file=str(p))
        return [p]
    d = fustor_home() / f"{role}-config"
    files = _dir_files(d) if d.is_dir() else []
    if not files:
        raise ConfigError(
            f"no config found: create {d / 'default.yaml'} (see the README) or pass --config",
        )
    return files


def _dir_files(d: Path) -> list[Path]:
    files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    files.sort(key=lambda p: p.stem != "default")
    return files


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML silently keeps the last,
    which would drop e.g. a whole first `pipes:` section)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=str(path)) from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}invalid YAML: {problem}", file=str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top, got {_tname(data)}", file=str(path))
    return data


SECTIONS = ("receivers", "views", "pipes", "sources", "senders")


def _merge(files: list[Path]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Merge files: sections' ids must be unique across files; scalars from a later file
    override nothing (a repeated scalar key is an error too). Returns data and key → file."""
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for f in files:
        data = _read_yaml(f)
        for key, value in data.items():
            key = str(key)
            if key in SECTIONS and isinstance(value, dict):
                section = merged.setdefault(key, {})
                if not isinstance(section, dict):
                    raise ConfigError("expected a mapping", file=str(f), key=key)
                for ident, body in value.items():
                    ident = str(ident)
                    if ident in section:
                        raise ConfigError(
                            f"duplicate id (also defined in {origin[f'{key}.{ident}']})",
                            file=str(f), key=f"{key}.{ident}",
                        )
                    section[ident] = body
                    origin[f"{key}.{ident}"] = f
            else:
                if key in merged:
                    raise ConfigError(
                        f"defined twice (also in {origin[key]})", file=str(f), key=key
                    )
                merged[key] = value
            origin.setdefault(key, f)
    return merged, origin


# ---------------------------------------------------------------------------- checking
def _tname(v: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing"}.get(type(v), type(v).__name__)


class _Node:
    """A mapping being read: knows its file and key path, and which keys were used."""

    def __init__(self, data: object, key: str, origin: Mapping[str, Path], top: str = "") -> None:
        self.key = key
        self._origin = origin
        self._top = top or key.split(".")[0]
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(f"expected a mapping, got {_tname(data)}")
        self.data: dict[str, Any] = {str(k): v for k, v in data.items()}
        self._used: set[str] = set()

    def file(self) -> str | None:
        parts = self.key.split(".")
        for n in range(len(parts), 0, -1):
            f = self._origin.get(".".join(parts[:n]))
            if f:
                return str(f)
        f = self._origin.get("") or next(iter(self._origin.values()), None)
        return str(f) if f else None

    def fail(self, msg: str, sub: str | None = None) -> NoReturn:
        key = f"{self.key}.{sub}" if sub and self.key else (sub or self.key or None)
        raise ConfigError(msg, file=self._file_for(key), key=key)

    def _file_for(self, key: str | None) -> str | None:
        if key:
            parts = key.split(".")
            for n in range(len(parts), 0, -1):
                f = self._origin.get(".".join(parts[:n]))
                if f:
                    return str(f)
        f = next(iter(self._origin.values()), None)
        return str(f) if f else None

    def child(self, name: str) -> _Node:
        self._used.add(name)
        return _Node(self.data.get(name), f"{self.key}.{name}" if self.key else name, self._origin)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
        self._used.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        v = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
        if not ok and float in kinds and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            want = " or ".join(_tname(k()) if k is not type(None) else "nothing" for k in kinds)
            self.fail(f"expected {want}, got {_tname(v)} ({v!r})", name)
        if check is not None:
            problem = check(v)
            if problem:
                self.fail(problem, name)
        return v

    def require(self, name: str, kind: type, check: Callable[[Any], str | None] | None = None) -> Any:
        if name not in self.data or self.data[name] is None:
            self.fail("is required", name)
        return self.get(name, kind, None, check)

    def str_list(self, name: str) -> tuple[str, ...]:
        self._used.add(name)
        v = self.data.get(name)
        if v is None:
            return ()
        if not isinstance(v, list):
            self.fail(f"expected a list, got {_tname(v)}", name)
        for i, item in enumerate(v):
            if not isinstance(item, str) or not item:
                self.fail(f"expected a non-empty string, got {_tname(item)} ({item!r})", f"{name}[{i}]")
        return tuple(v)

    def done(self) -> None:
        extra = sorted(set(self.data) - self._used)
        if extra:
            known = ", ".join(sorted(self._used))
            self.fail(f"unknown key {extra[0]!r} (known: {known})", extra[0])

    def items(self) -> list[tuple[str, _Node]]:
        return [(k, self.child(k)) for k in list(self.data)]


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else f"must be a port number 0..65535, got {v}"


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in allowed else f"must be one of {', '.join(allowed)}, got {v!r}"
    return check


def _logging(root: _Node) -> LoggingConfig:
    v = root.data.get("logging")
    root._used.add("logging")
    if isinstance(v, str):
        level = v.upper()
        if level not in LOG_LEVELS:
            root.fail(f"must be one of {', '.join(LOG_LEVELS)}, got {v!r}", "logging")
        return LoggingConfig(level=level)
    node = root.child("logging")
    level = node.get("level", str, "INFO").upper()
    if level not in LOG_LEVELS:
        node.fail(f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}", "level")
    cfg = LoggingConfig(level=level, file=node.get("file", str, None))
    node.done()
    return cfg


def _ref(node: _Node, name: str, what: str, known: Mapping[str, object]) -> str:
    ref: str = node.require(name, str)
    if ref not in known:
        node.fail(f"no {what} named {ref!r} (known: {', '.join(sorted(known)) or 'none'})", name)
    return ref


# ---------------------------------------------------------------------------- Fusion
def parse_fusion(data: dict[str, Any], origin: Mapping[str, Path]) -> FusionConfig:
    root = _Node(data, "", origin)
    host = root.get("host", str, "0.0.0.0")
    port = root.get("port", int, 8101, _port)
    timeout = root.get("session_timeout_seconds", float, 30.0, _positive)
    log = _logging(root)
    mgmt = root.child("management")
    mgmt_keys = mgmt.str_list("api_keys")
    mgmt.done()

    receivers: dict[str, ReceiverConfig] = {}
    raw_pipes = root.data.get("pipes") or {}
    for rid, node in root.child("receivers").items():
        node.get("driver", str, "http", _one_of("http"))
        keys: list[ReceiverKey] = []
        raw_keys = node.get("api_keys", list, [])
        for i, item in enumerate(raw_keys):
            kn = _Node(item, f"{node.key}.api_keys[{i}]", origin)
            keys.append(ReceiverKey(kn.require("key", str), kn.require("pipe_id", str)))
            kn.done()
        receivers[rid] = ReceiverConfig(
            id=rid,
            host=node.get("host", str, host),
            port=node.get("port", int, 18888, _port),
            api_keys=tuple(keys),
            max_batch_events=node.get("max_batch_events", int, 20000, _positive),
            max_batch_bytes=node.get("max_batch_bytes", int, 64 * 1024 * 1024, _positive),
        )
        node.done()

    views: dict[str, ViewConfig] = {}
    for vid, node in root.child("views").items():
        node.get("driver", str, "fs", _one_of("fs"))
        dp = node.child("driver_params")
        params = ViewParams(
            hot_file_threshold=dp.get("hot_file_threshold", float, 60.0, _non_negative),
            max_tree_items=dp.get("max_tree_items", int, 100_000, _positive),
            tombstone_ttl_sec=dp.get("tombstone_ttl_sec", float, 3600.0, _positive),
            suspect_ttl_sec=dp.get("suspect_ttl_sec", float, 60.0, _positive),
        )
        dp.done()
        views[vid] = ViewConfig(id=vid, api_keys=node.str_list("api_keys"), driver_params=params)
        node.done()

    pipes: dict[str, FusionPipeConfig] = {}
    for pid, node in root.child("pipes").items():
        rid = _ref(node, "receiver", "receiver", receivers)
        vlist = node.str_list("views")
        if not vlist:
            node.fail("must name at least one view", "views")
        for i, v in enumerate(vlist):
            if v not in views:
                node.fail(f"no view named {v!r} (known: {', '.join(sorted(views)) or 'none'})", f"views[{i}]")
        pt = node.get("session_timeout_seconds", float, None, _positive)
        pipes[pid] = FusionPipeConfig(
            id=pid, receiver=rid, views=vlist,
            audit_interval_sec=node.get("audit_interval_sec", float, 600.0, _positive),
            full_audit_interval_sec=node.get("full_audit_interval_sec", float, 7 * 86400.0, _positive),
            sentinel_interval_sec=node.get("sentinel_interval_sec", float, 120.0, _positive),
            session_timeout_seconds=pt,
        )
        node.done()
    root.done()
    del raw_pipes

    # Cross checks: keys unique across receivers, views and management; ports unique.
    seen_keys: dict[str, str] = {}

    def claim(key: str, where: str) -> None:
        if key in seen_keys:
            root.fail(f"API key used twice (also at {seen_keys[key]})", where)
        seen_keys[key] = where

    seen_ports: dict[int, str] = {port: "port"} if port else {}
    for rid, r in receivers.items():
        if r.port and r.port in seen_ports:
            root.fail(f"port {r.port} used twice (also by {seen_ports[r.port]})", f"receivers.{rid}.port")
        seen_ports[r.port] = f"receivers.{rid}.port"
        for i, k in enumerate(r.api_keys):
            claim(k.key, f"receivers.{rid}.api_keys[{i}].key")
            if k.pipe_id not in pipes:
                root.fail(f"no pipe named {k.pipe_id!r} (known: {', '.join(sorted(pipes)) or 'none'})",
                          f"receivers.{rid}.api_keys[{i}].pipe_id")
            if pipes[k.pipe_id].receiver != rid:
                root.fail(f"pipe {k.pipe_id!r} is attached to receiver {pipes[k.pipe_id].receiver!r}, not {rid!r}",
                          f"receivers.{rid}.api_keys[{i}].pipe_id")
    for vid, view in views.items():
        for i, key in enumerate(view.api_keys):
            claim(key, f"views.{vid}.api_keys[{i}]")
    for i, key in enumerate(mgmt_keys):
        claim(key, f"management.api_keys[{i}]")

    return FusionConfig(
        host=host, port=port, session_timeout_seconds=timeout, logging=log,
        management_api_keys=mgmt_keys, receivers=receivers, views=views, pipes=pipes,
        files=tuple(str(p) for p in dict.fromkeys(origin.values())),
    )


def load_fusion_config(path: str | os.PathLike[str] | None = None) -> FusionConfig:
    data, origin = _merge(config_files("fusion", path))
    return parse_fusion(data, origin)


# ---------------------------------------------------------------------------- agent
def default_agent_id() -> str:
    """Stable per host: the host name plus a short hash of the machine id (or the name)."""
    host = socket.gethostname()
    seed = host
    for f in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            seed = Path(f).read_text().strip() or host
            break
        except OSError:
            continue
    return f"{host}-{hashlib.sha1(seed.encode()).hexdigest()[:6]}"


def parse_agent(data: dict[str, Any], origin: Mapping[str, Path]) -> AgentConfig:
    root = _Node(data, "", origin)
    agent_id = root.get("agent_id", str, "") or default_agent_id()
    log = _logging(root)
    buffer_events = root.get("buffer_events", int, 200_000, _positive)

    sources: dict[str, SourceConfig] = {}
    for sid, node in root.child("sources").items():
        node.get("driver", str, "fs", _one_of("fs"))
        uri = node.require("uri", str)
        if uri.startswith("file://"):
            uri = uri[len("file://"):]
        if not os.path.isabs(os.path.expanduser(uri)):
            node.fail(f"must be an absolute path, got {uri!r}", "uri")
        dp = node.child("driver_params")
        params = SourceParams(
            exclude=dp.str_list("exclude"),
            max_scan_workers=dp.get("max_scan_workers", int, 4, _positive),
            batch_size=dp.get("batch_size", int, 10000, _positive),
            coalesce_sec=dp.get("coalesce_sec", float, 0.2, _non_negative),
        )
        dp.done()
        sources[sid] = SourceConfig(id=sid, uri=os.path.expanduser(uri), driver_params=params)
        node.done()

    senders: dict[str, SenderConfig] = {}
    for sid, node in root.child("senders").items():
        node.get("driver", str, "fusion", _one_of("fusion", "http"))
        uri = node.require("uri", str)
        if not uri.startswith(("http://", "https://")):
            node.fail(f"must be an http:// or https:// URL, got {uri!r}", "uri")
        cred = node.child("credential")
        key = cred.require("key", str)
        cred.done()
        senders[sid] = SenderConfig(
            id=sid, uri=uri.rstrip("/"), key=key,
            timeout_sec=node.get("timeout_sec", float, 30.0, _positive),
        )
        node.done()

    pipes: dict[str, AgentPipeConfig] = {}
    for pid, node in root.child("pipes").items():
        pipes[pid] = AgentPipeConfig(
            id=pid,
            source=_ref(node, "source", "source", sources),
            sender=_ref(node, "sender", "sender", senders),
        )
        node.done()
    root.done()
    return AgentConfig(
        agent_id=agent_id, logging=log, buffer_events=buffer_events,
        sources=sources, senders=senders, pipes=pipes,
        files=tuple(str(p) for p in dict.fromkeys(origin.values())),
    )


def load_agent_config(path: str | os.PathLike[str] | None = None) -> AgentConfig:
    data, origin = _merge(config_files("agent", path))
    return parse_agent(data, origin)
