"""The agent CLI shim: validate a good and a bad config (start/stop is the shared CLI's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fustor.agent.cli import main

GOOD = """
sources:
  nfs-source: {driver: fs, uri: "%s"}
senders:
  fusion-main: {driver: fusion, uri: "http://127.0.0.1:18888", credential: {key: "k1"}}
pipes:
  sync-job: {source: nfs-source, sender: fusion-main}
"""


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD % tmp_path)
    assert main(["validate", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "sync-job" in out and "http://127.0.0.1:18888" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipes: {x: {source: nope, sender: y}}\n")
    assert main(["validate", "--config", str(bad)]) == 2
    assert "pipes.x.source" in capsys.readouterr().err
