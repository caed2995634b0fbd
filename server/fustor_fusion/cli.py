"""`fustor-fusion` entry point: a thin shim over the shared CLI (fustor.cli.run_cli)."""

from __future__ import annotations

import sys
from typing import Any

from fustor.cli import missing_extra, run_cli
from fustor.config import FusionConfig, load_fusion_config


def describe(config: FusionConfig) -> dict[str, Any]:
    """What `validate` prints: ports, receivers, views and pipes (no keys)."""
    return {
        "api": f"http://{config.host}:{config.port}",
        "session_timeout_seconds": config.session_timeout_seconds,
        "management": (f"{len(config.management_api_keys)} key(s)"
                       if config.management_api_keys else "loopback clients only"),
        "receivers": {rid: {"listen": f"{r.host}:{r.port}",
                            "pipes": sorted({k.pipe_id for k in r.api_keys}),
                            "keys": len(r.api_keys)}
                      for rid, r in config.receivers.items()},
        "views": {vid: {"driver": v.driver, "keys": len(v.api_keys),
                        "pipes": [p.id for p in config.pipes.values() if vid in p.views]}
                  for vid, v in config.views.items()},
        "pipes": {pid: {"receiver": p.receiver, "views": list(p.views),
                        "audit_interval_sec": p.audit_interval_sec,
                        "session_timeout_seconds": config.pipe_timeout(pid)}
                  for pid, p in config.pipes.items()},
    }


def main(argv: list[str] | None = None) -> int:
    try:
        from fustor_fusion.service import serve_fusion  # the server stack only when serving
    except ImportError as exc:
        return missing_extra("fustor-fusion", "fusion", exc)

    return run_cli(role="fusion", load=load_fusion_config, serve=serve_fusion,
                   describe=describe, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
