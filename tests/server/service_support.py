"""Helpers for the Fusion service tests (plain code, no pytest): a config builder and row
encoders for JSON batches."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fusion_rows import T0, dir_, done, end, file, start  # noqa: F401  (re-exported for tests)

from fustor.config import FusionConfig, parse_fusion
from fustor.protocol import encode

READ1, READ2, PUSH1, PUSH2, PUSH3, MGMT = "read-1", "read-2", "push-1", "push-2", "push-3", "mgmt"

BASE: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 0,
    "receivers": {
        "r1": {"port": 0, "api_keys": [{"key": PUSH1, "pipe_id": "pipe-1"},
                                       {"key": PUSH2, "pipe_id": "pipe-2"}]},
        "r2": {"port": 0, "api_keys": [{"key": PUSH3, "pipe_id": "pipe-3"}]},
    },
    "views": {
        "v1": {"api_keys": [READ1], "driver_params": {"hot_file_threshold": 0.0}},
        "v2": {"api_keys": [READ2], "driver_params": {"hot_file_threshold": 0.0}},
    },
    "pipes": {
        "pipe-1": {"receiver": "r1", "views": ["v1"]},
        "pipe-2": {"receiver": "r1", "views": ["v1"]},
        "pipe-3": {"receiver": "r2", "views": ["v2"]},
    },
}


def config_dict(**top: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d.update(top)
    return d


def make_config(data: dict[str, Any] | None = None, **top: Any) -> FusionConfig:
    d = config_dict(**top) if data is None else data
    return parse_fusion(d, {"": Path("test-fusion.yaml")})


def rows(*events: Any) -> list[dict[str, Any]]:
    return [encode(e) for e in events]


def snapshot_rows(scan: str = "snap-1", files: int = 3, *, top: str = "/data",
                  mtime: float = T0) -> list[dict[str, Any]]:
    """A complete small snapshot: `top` with `files` files, DirDone for `/` and `top`."""
    evs = [start(scan, "snapshot"), dir_(top, mtime=mtime, scan=scan)]
    evs += [file(f"{top}/f{i}.dat", mtime=mtime + i, size=100 + i, scan=scan) for i in range(files)]
    evs += [done(scan, top), done(scan, "/"), end(scan, entries=files + 1)]
    return rows(*evs)
