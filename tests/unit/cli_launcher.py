"""Runs `fustor.cli.run_cli` for a role exactly as the console-script shims do, so the CLI
tests exercise the real config loaders and services: `python cli_launcher.py ROLE ARGS...`."""

from __future__ import annotations

import sys
from collections.abc import Awaitable
from typing import Any


def main() -> int:
    from fustor.cli import run_cli

    role, argv = sys.argv[1], sys.argv[2:]
    if role == "fusion":
        from fustor.config import load_fusion_config

        def serve(config: Any, **kw: Any) -> Awaitable[None]:
            from fustor_fusion.service import serve_fusion

            return serve_fusion(config, **kw)

        return run_cli("fusion", load=load_fusion_config, serve=serve, argv=argv)
    from fustor.config import load_agent_config

    def serve_agent(config: Any, **kw: Any) -> Awaitable[None]:
        from fustor.agent.runner import run_agent

        return run_agent(config, **kw)

    return run_cli("agent", load=load_agent_config, serve=serve_agent, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
