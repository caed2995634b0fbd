"""How the CLI shows things to people: the summary of a config (`validate`) and `status`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any


def print_status(prog: str, info: dict[str, Any]) -> None:
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
    print_tree(rest, indent=1)


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


def print_tree(data: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(data, Mapping):
        for k, v in data.items():
            if isinstance(v, Mapping | list) and v:
                print(f"{pad}{k}:")
                print_tree(v, indent + 1)
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
