"""`make demo` without a terminal: `python -m fustor.demo --check` starts Fusion, an agent and
the mount on the sample tree, verifies the API and the mount against it, stops and unmounts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fustor.demo import make_sample_tree

HAVE_FUSE = os.path.exists("/dev/fuse")


def stop_demo(demo: subprocess.Popen[str]) -> None:
    """SIGTERM first: the demo stops its children (in their own sessions) and unmounts."""
    if demo.poll() is None:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(40)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    demo = subprocess.Popen([sys.executable, "-m", "fustor.demo", "--check", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        out, err = demo.communicate(timeout=150)
    finally:
        stop_demo(demo)
    return subprocess.CompletedProcess(demo.args, demo.returncode, out, err)


def test_sample_tree_is_nested_with_a_symlink_and_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "src"
    n = make_sample_tree(root)
    assert n == sum(1 for _ in root.rglob("*"))
    assert 300 <= n <= 1000
    assert (root / "latest").is_symlink() and os.readlink(root / "latest") == "projects/alpha"
    assert (root / "deep/a/b/c/d/e/f/g/needle.txt").is_file()
    assert (root / "empty-dir").is_dir()
    assert make_sample_tree(root) == n


def test_demo_check(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FUSTOR_CONFIG", "FUSTOR_HOME")}
    r = run_demo("--work", str(tmp_path / "work"), env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "check: API lists the" in r.stdout
    if HAVE_FUSE:
        assert "check: the mount at" in r.stdout, out
    mnt = tmp_path / "work" / "mnt"
    assert not os.path.ismount(mnt)
    home = tmp_path / "work" / "demo-home"
    assert not (home / "fusion.pid").exists() and not (home / "agent.pid").exists()


@pytest.mark.skipif(not HAVE_FUSE, reason="needs /dev/fuse")
def test_demo_with_dir_and_mnt(tmp_path: Path) -> None:
    src = tmp_path / "mine"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("hello")
    (src / "top.txt").write_text("x")
    mnt = tmp_path / "elsewhere"
    r = run_demo("--work", str(tmp_path / "work"), "--dir", str(src), "--mnt", str(mnt))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"check: the mount at {mnt}" in r.stdout
    assert not os.path.ismount(mnt)
    assert not (tmp_path / "work" / "demo-src").exists()


@pytest.mark.skipif(not HAVE_FUSE, reason="needs /dev/fuse")
def test_demo_runs_until_ctrl_c_then_unmounts(tmp_path: Path) -> None:
    work = tmp_path / "work"
    out = tmp_path / "demo.out"
    with open(out, "w") as sink:
        demo = subprocess.Popen([sys.executable, "-m", "fustor.demo", "--work", str(work)],
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True)
    mnt = work / "mnt"
    try:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C" not in out.read_text():
            assert demo.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        text = out.read_text()
        for hint in (f"ls -l {mnt}", "X-API-Key: demo-key", "force_real_time=True", "getfattr"):
            assert hint in text
        assert "README.txt" in os.listdir(mnt)
        (work / "demo-src" / "new-file.txt").write_text("new")
        deadline = time.monotonic() + 20
        while "new-file.txt" not in os.listdir(mnt):  # inotify → Fusion → mount
            assert time.monotonic() < deadline
            time.sleep(0.1)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 0, out.read_text()
        assert "stopped and unmounted" in out.read_text()
        assert not os.path.ismount(mnt)
    finally:
        stop_demo(demo)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
