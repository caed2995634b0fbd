"""The systemd units of deploy/systemd are the guide's, and what they rely on holds: `start` in
the foreground with FUSTOR_CONFIG, SIGTERM stops it, and a restart after a crash (stale pid
file, Restart=always) comes up again."""

from __future__ import annotations

import configparser
import signal
from pathlib import Path

import pytest
from unit_cli_helpers import Env, port_is_free, read_line

from fustor import daemon

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


@pytest.mark.parametrize("role", ["fusion", "agent"])
def test_unit_file_as_the_guide(role: str) -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNITS / f"fustor-{role}.service")
    svc = unit["Service"]
    assert svc["Type"] == "simple"
    assert svc["ExecStart"] == f"/path/to/venv/bin/fustor-{role} start"
    assert svc["Restart"] == "always" and svc["RestartSec"] == "5s"
    assert svc["Environment"] == "PYTHONUNBUFFERED=1"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert f"# Environment=FUSTOR_CONFIG=/home/<USER>/.fustor/{role}-config/default.yaml" in (
        UNITS / f"fustor-{role}.service").read_text()


def test_restart_after_a_crash_replaces_the_stale_pid_file(env: Env, tmp_path: Path) -> None:
    conf = tmp_path / "fusion.yaml"
    conf.write_text(f"host: 127.0.0.1\nport: {env.api_port}\n")
    env.env["FUSTOR_CONFIG"] = str(conf)  # Environment=FUSTOR_CONFIG=...
    first = env.spawn("start")
    read_line(first, "started")
    first.send_signal(signal.SIGKILL)  # a crash: no clean-up at all
    first.wait(10)
    assert env.pid_file().exists() and daemon.read_pid(env.pid_file()) is None
    second = env.spawn("start")  # what Restart=always does 5 s later
    read_line(second, "started")
    assert daemon.read_pid(env.pid_file()) == second.pid
    second.send_signal(signal.SIGTERM)  # systemctl stop
    assert second.wait(10) == 0
    assert port_is_free(env.api_port)
