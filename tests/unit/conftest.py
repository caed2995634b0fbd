"""Fixtures of the unit tests: `env`, a FUSTOR_HOME in tmp_path with free ports, whose
processes are all stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from unit_cli_helpers import Env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "home")
    e.home.mkdir()
    try:
        yield e
    finally:
        e.cleanup()
