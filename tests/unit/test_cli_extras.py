"""A host with only some roles installed gets one line saying what to install, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK = "import sys; sys.modules[{mod!r}] = None; from {cli} import main; sys.exit(main({argv!r}))"


@pytest.mark.parametrize(
    ("cli", "mod", "argv", "extra"),
    [
        ("fustor_fusion.cli", "quart_trio", ["validate"], "fusion"),
        ("fustor.agent.cli", "pyinotify", ["validate"], "agent"),
        ("fustor_mount.cli", "pyfuse3", ["/nonexistent-mountpoint"], "mount"),
    ],
)
def test_missing_role_packages(cli: str, mod: str, argv: list[str], extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK.format(mod=mod, cli=cli, argv=argv)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"pip install 'fustor[{extra}]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
