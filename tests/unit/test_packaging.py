"""Packaging: one `fustor` distribution holding fustor (with the agent), fustor_fusion and
fustor_mount with every subpackage, the three console scripts and the role extras; nothing
importable as plain `server` or `mount`."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"fustor": ROOT / "fustor", "fustor_fusion": ROOT / "server" / "fustor_fusion",
                "fustor_mount": ROOT / "mount" / "fustor_mount"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a clean copy: setuptools builds in the source tree (build/, *.egg-info), and a
    # stale build/ could smuggle deleted modules into the wheel or race with other builds.
    src = tmp_path_factory.mktemp("src") / "fustor"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".work", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    # The venv's setuptools, no network.
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = out.glob("fustor-*.whl")
    zf = zipfile.ZipFile(path)
    yield zf
    zf.close()


def source_modules() -> set[str]:
    """Every .py file of the three packages, as wheel paths (without caches and stray dirs)."""
    found = set()
    for name, top in PACKAGE_DIRS.items():
        for py in top.rglob("*.py"):
            rel = py.relative_to(top)
            # only modules inside real packages (a dir without __init__.py is not shipped)
            if all((top / Path(*rel.parts[:i]) / "__init__.py").exists()
                   for i in range(len(rel.parts))):
                found.add(f"{name}/{rel.as_posix()}")
    return found


def test_wheel_holds_all_packages_and_nothing_else(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for required in ("fustor/__init__.py", "fustor/agent/__init__.py", "fustor/config.py",
                     "fustor/cli.py", "fustor_fusion/__init__.py", "fustor_mount/__init__.py",
                     "fustor/py.typed", "fustor_fusion/py.typed", "fustor_mount/py.typed"):
        assert required in names
    missing = source_modules() - names
    assert not missing, f"modules left out of the wheel: {sorted(missing)}"
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"fustor", "fustor_fusion", "fustor_mount"}
    assert not any(n.startswith(("server/", "mount/", "tests/", "bench/")) for n in names)


def test_wheel_metadata_scripts_and_extras(wheel: zipfile.ZipFile) -> None:
    (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(meta_name))
    assert meta["Name"] == "fustor"
    assert meta["Requires-Python"] == ">=3.11"
    assert set(meta.get_all("Provides-Extra") or []) >= {"agent", "fusion", "mount", "all", "dev"}
    requires = "\n".join(meta.get_all("Requires-Dist") or [])
    assert 'pyinotify' in requires and 'extra == "agent"' in requires
    assert 'pyasyncore' in requires and 'python_version >= "3.12"' in requires
    assert 'quart-trio' in requires and 'pyfuse3' in requires
    eps_name = meta_name.replace("METADATA", "entry_points.txt")
    eps = wheel.read(eps_name).decode()
    assert "fustor-fusion = fustor_fusion.cli:main" in eps
    assert "fustor-agent = fustor.agent.cli:main" in eps
    assert "fustor-mount = fustor_mount.cli:main" in eps


def test_installed_packages_import_and_plain_names_do_not(tmp_path: Path) -> None:
    code = """
import importlib, sys
for name in ("fustor", "fustor.agent", "fustor_fusion", "fustor_mount"):
    importlib.import_module(name)
for name in ("server", "mount"):
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    sys.exit(f"{name} is importable")
"""
    # From an unrelated directory, so the checkout itself is not on sys.path.
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_console_scripts_are_installed() -> None:
    bindir = Path(sys.executable).parent
    for script in ("fustor-fusion", "fustor-agent", "fustor-mount"):
        assert (bindir / script).exists(), script
