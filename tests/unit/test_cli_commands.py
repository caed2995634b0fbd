"""The CLI as users run it: real subprocesses with FUSTOR_HOME=tmp_path and free ports.

start (foreground and -D), pid files, stale pid files, a second start refused, status, reload
(SIGHUP; a bad new config is refused and the old one kept), stop, signals, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from unit_cli_helpers import (
    DEADLINE,
    Env,
    assert_one_line_error,
    port_is_free,
    read_line,
    wait_until,
)

from fustor import daemon


# ---------------------------------------------------------------------------- validate
def test_validate_prints_a_summary(env: Env) -> None:
    env.write_fusion()
    r = env.run("validate")
    assert r.returncode == 0, r.stderr
    assert "config OK" in r.stdout
    for word in ("unified-view", "pipe-1", "pipe-2", "http-receiver", str(env.recv_port)):
        assert word in r.stdout
    assert "agent-1-push-key" not in r.stdout  # secrets are not printed


@pytest.mark.parametrize("command", ["validate", "start"])
def test_bad_config_exit_2_one_line_no_port(env: Env, command: str) -> None:
    path = env.write_fusion(extra="colour: red\n")
    r = env.run(command)
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "fustor-fusion: error:", str(path), "colour", "unknown key")
    assert not env.pid_file().exists()
    assert port_is_free(env.api_port) and port_is_free(env.recv_port)


def test_bad_config_of_the_agent(env: Env, tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("sources: {s: {uri: relative/path}}\n")
    r = env.run("start", "--config", str(bad), role="agent")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "fustor-agent: error:", "sources.s.uri", "absolute path")


def test_missing_config_exit_2(env: Env) -> None:
    r = env.run("start")
    assert r.returncode == 2
    assert_one_line_error(r.stderr, "no config found", str(env.home / "fusion-config"))


def test_usage_errors_and_version(env: Env) -> None:
    r = env.run("frobnicate")
    assert r.returncode == 2 and "usage:" in r.stderr
    r = env.run("--version")
    assert r.returncode == 0 and r.stdout.startswith("fustor-fusion ")


# ---------------------------------------------------------------------------- foreground
def test_foreground_start_status_second_start_stop(env: Env) -> None:
    env.write_fusion()
    proc = env.spawn("start")
    line = read_line(proc, "started")
    assert f"http://127.0.0.1:{env.api_port}" in line and str(env.recv_port) in line
    assert daemon.read_pid(env.pid_file()) == proc.pid  # written in the foreground too

    st = env.run("status")
    assert st.returncode == 0, st.stderr
    assert f"running (pid {proc.pid}," in st.stdout
    for word in (str(env.api_port), str(env.recv_port), "unified-view", "pipe-1", "pipe-2"):
        assert word in st.stdout

    again = env.run("start")
    assert again.returncode == 1
    assert_one_line_error(again.stderr, "already running", str(proc.pid))
    assert proc.poll() is None

    stop = env.run("stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert proc.wait(DEADLINE) == 0
    assert not env.pid_file().exists()
    assert port_is_free(env.api_port) and port_is_free(env.recv_port)
    r = env.run("status")
    assert r.returncode == 3 and "not running" in r.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly(env: Env, sig: signal.Signals) -> None:
    env.write_fusion()
    proc = env.spawn("start")
    read_line(proc, "started")
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    assert not env.pid_file().exists()
    assert port_is_free(env.api_port) and port_is_free(env.recv_port)
    assert "Traceback" not in env.stderr_of(0)


def test_fustor_config_env_and_config_option(env: Env, tmp_path: Path) -> None:
    conf = tmp_path / "elsewhere.yaml"
    conf.write_text(f"host: 127.0.0.1\nport: {env.api_port}\nviews: {{only-env: {{}}}}\n")
    env.env["FUSTOR_CONFIG"] = str(conf)
    r = env.run("validate")
    assert r.returncode == 0 and "only-env" in r.stdout
    other = tmp_path / "opt.yaml"
    other.write_text("views: {only-opt: {}}\n")
    r = env.run("validate", "--config", str(other))
    assert r.returncode == 0 and "only-opt" in r.stdout and "only-env" not in r.stdout
    proc = env.spawn("start")  # systemd: Environment=FUSTOR_CONFIG=..., ExecStart=... start
    read_line(proc, "started")
    st = env.run("status")
    assert "only-env" in st.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_port_in_use_is_one_line_exit_1(env: Env) -> None:
    env.write_fusion()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", env.recv_port))
        blocker.listen()
        r = env.run("start")
    assert r.returncode in (1, 2), r.stderr  # 2 if the service reports it as a ConfigError
    assert str(env.recv_port) in r.stderr or "in use" in r.stderr
    assert "Traceback" not in r.stderr
    assert "fustor-fusion: error:" in r.stderr
    assert not env.pid_file().exists()


# ---------------------------------------------------------------------------- pid files
def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_pid_file_is_reported_and_replaced(env: Env) -> None:
    env.write_fusion()
    env.pid_file().write_text(f"{dead_pid()}\n")
    r = env.run("status")
    assert r.returncode == 3 and "stale pid file" in r.stdout
    assert env.run("stop").returncode == 0
    r = env.run("reload")
    assert r.returncode == 7
    proc = env.spawn("start")
    read_line(proc, "started")
    assert daemon.read_pid(env.pid_file()) == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_pid_file_naming_a_recycled_pid_is_stale(tmp_path: Path) -> None:
    # A live process that started after the pid file was written is not its writer.
    pid_file = tmp_path / "x.pid"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(f"{sleeper.pid}\n")
        assert daemon.read_pid(pid_file) == sleeper.pid
        old = time.time() - 3600
        os.utime(pid_file, (old, old))
        assert daemon.read_pid(pid_file) is None
        assert daemon.write_pid_file(pid_file, 12345)  # replaced
        assert pid_file.read_text() == "12345\n"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pid_file_helpers(tmp_path: Path) -> None:
    pid_file = tmp_path / "sub" / "y.pid"
    assert daemon.read_pid(pid_file) is None
    assert daemon.write_pid_file(pid_file)
    assert daemon.read_pid(pid_file) == os.getpid()
    other = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.01)
        assert not daemon.write_pid_file(pid_file, other.pid)  # ours is live
        daemon.remove_pid_file(pid_file, other.pid)  # not its file: kept
        assert pid_file.exists()
    finally:
        other.kill()
        other.wait()
    daemon.remove_pid_file(pid_file)
    assert not pid_file.exists()
    pid_file.write_text("garbage\n")
    assert daemon.read_pid(pid_file) is None
    assert daemon.stop_pid(pid_file)  # nothing to stop


def test_a_zombie_is_not_alive() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: daemon._proc_stat(p.pid) is None or daemon._proc_stat(p.pid)[0] == "Z")
    assert not daemon.pid_alive(p.pid)
    p.wait()


# ---------------------------------------------------------------------------- detached
def test_detached_start_status_reload_stop(env: Env) -> None:
    env.write_fusion()
    r = env.run("start", "-D")
    assert r.returncode == 0, r.stderr
    assert "started" in r.stdout and f"127.0.0.1:{env.api_port}" in r.stdout
    pid = daemon.read_pid(env.pid_file())
    assert pid is not None and pid != os.getpid()
    log_file = env.home / "logs" / "fusion.log"
    assert "started" in log_file.read_text()

    again = env.run("start", "-D")
    assert again.returncode == 1 and "already running" in again.stderr

    st = env.run("status", "--json")
    assert st.returncode == 0 and '"state": "running"' in st.stdout
    assert "unified-view" in st.stdout

    # reload: a new view appears without a restart
    (env.home / "fusion-config" / "more.yaml").write_text("views: {late-view: {api_keys: [late]}}\n")
    r = env.run("reload")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: "late-view" in env.run("status").stdout)
    assert daemon.read_pid(env.pid_file()) == pid

    # a bad new config is refused by `reload` and, if signalled anyway, by the daemon
    (env.home / "fusion-config" / "more.yaml").write_text("views: {late-view: {colour: red}}\n")
    r = env.run("reload")
    assert r.returncode == 2 and "colour" in r.stderr
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "reload refused" in log_file.read_text())
    assert "late-view" in env.run("status").stdout
    assert daemon.read_pid(env.pid_file()) == pid

    stop = env.run("stop")
    assert stop.returncode == 0, stop.stderr
    assert not daemon.pid_alive(pid)
    assert not env.pid_file().exists()
    assert port_is_free(env.api_port) and port_is_free(env.recv_port)
    assert "stopped" in log_file.read_text()
    assert env.run("stop").returncode == 0


def test_detached_start_failure_is_reported(env: Env) -> None:
    env.write_fusion()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", env.api_port))
        blocker.listen()
        r = env.run("start", "-D")
    assert r.returncode in (1, 2)  # 2 if the service reports it as a ConfigError
    assert_one_line_error(r.stderr, "fustor-fusion: error:", str(env.api_port))
    assert not env.pid_file().exists()


def test_status_uses_the_management_key(env: Env) -> None:
    env.write_fusion(extra="management: {api_keys: [admin-key]}\n")
    proc = env.spawn("start")
    read_line(proc, "started")
    st = env.run("status")
    assert st.returncode == 0
    assert "views_error" not in st.stdout and "unified-view" in st.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


# ---------------------------------------------------------------------------- agent
def test_agent_detached_with_fusion(env: Env, tmp_path: Path) -> None:
    env.write_fusion()
    fusion = env.spawn("start")
    read_line(fusion, "started")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("x")
    agent_dir = env.home / "agent-config"
    agent_dir.mkdir()
    (agent_dir / "default.yaml").write_text(f"""
agent_id: test-agent
sources: {{s: {{uri: "{src}"}}}}
senders: {{f: {{uri: "http://127.0.0.1:{env.recv_port}", credential: {{key: agent-1-push-key}}}}}}
pipes: {{job: {{source: s, sender: f}}}}
""")
    r = env.run("start", "-D", role="agent")
    assert r.returncode == 0, r.stderr
    assert "fustor-agent started" in r.stdout
    pid = daemon.read_pid(env.pid_file("agent"))
    assert pid is not None
    st = env.run("status", role="agent")
    assert st.returncode == 0 and f"running (pid {pid}," in st.stdout
    # Fusion's status sees the agent's session on pipe-1.
    wait_until(lambda: "leader test-agent" in env.run("status").stdout)
    again = env.run("start", role="agent")
    assert again.returncode == 1 and "already running" in again.stderr
    assert env.run("reload", role="agent").returncode == 0
    assert env.run("stop", role="agent").returncode == 0
    assert not daemon.pid_alive(pid) and not env.pid_file("agent").exists()
    assert "stopped" in (env.home / "logs" / "agent.log").read_text()
    fusion.send_signal(signal.SIGTERM)
    assert fusion.wait(10) == 0


@pytest.mark.parametrize("detach", [False, True])
def test_unusable_log_file_is_one_line(env: Env, tmp_path: Path, detach: bool) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env.write_fusion(extra=f"logging: {{file: {blocker}/fusion.log}}\n")
    r = env.run("start", *(["-D"] if detach else []))
    assert r.returncode == 1
    assert_one_line_error(r.stderr, "fustor-fusion: error: cannot start:", str(blocker))
    assert not env.pid_file().exists()
    assert port_is_free(env.api_port)


def test_stop_of_a_process_ignoring_sigterm_needs_force(env: Env) -> None:
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    try:
        time.sleep(0.1)  # let bash install the trap before the signal
        env.pid_file().write_text(f"{stubborn.pid}\n")
        r = env.run("stop", "--timeout", "0.5")
        assert r.returncode == 1
        assert "did not stop within 0.5s" in r.stderr and "--force" in r.stderr
        assert stubborn.poll() is None
        r = env.run("stop", "--timeout", "0.5", "--force")
        assert r.returncode == 0, r.stderr
        assert stubborn.wait(5) == -signal.SIGKILL
        assert not env.pid_file().exists()
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()
