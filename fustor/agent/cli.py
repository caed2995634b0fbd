"""`fustor-agent`: the shared CLI (start/stop/status/reload/validate) over run_agent."""

from __future__ import annotations

from typing import Any

from fustor.cli import missing_extra, run_cli
from fustor.config import AgentConfig, load_agent_config


def describe(config: AgentConfig) -> dict[str, Any]:
    return {
        "agent_id": config.agent_id,
        "pipes": {pid: {"source": config.sources[p.source].uri,
                        "sender": config.senders[p.sender].uri}
                  for pid, p in config.pipes.items()},
    }


def main(argv: list[str] | None = None) -> int:
    try:
        from fustor.agent.runner import run_agent  # pulls in the inotify binding
    except ImportError as exc:
        return missing_extra("fustor-agent", "agent", exc)
    return run_cli("agent", load=load_agent_config, serve=run_agent, describe=describe,
                   argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
