"""The README stays true to the code: its config reference names every key the loaders accept,
and `.ci/run` runs the README's test command."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fustor.config import ConfigError, load_agent_config, load_fusion_config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

FUSION: dict[str, Any] = {
    "logging": {"level": "INFO"},
    "management": {"api_keys": ["m"]},
    "receivers": {"r": {"api_keys": [{"key": "k", "pipe_id": "p"}]}},
    "views": {"v": {"driver_params": {}}},
    "pipes": {"p": {"receiver": "r", "views": ["v"]}},
}
AGENT: dict[str, Any] = {
    "logging": {"level": "INFO"},
    "sources": {"s": {"uri": "/x", "driver_params": {}}},
    "senders": {"f": {"uri": "http://h:1", "credential": {"key": "k"}}},
    "pipes": {"p": {"source": "s", "sender": "f"}},
}
# node path in the data → how the README writes it
FUSION_NODES = {"": "", "logging": "logging", "management": "management",
                "receivers.r": "receivers.<id>", "views.v": "views.<id>",
                "views.v.driver_params": "views.<id>.driver_params", "pipes.p": "pipes.<id>"}
AGENT_NODES = {"": "", "logging": "logging", "sources.s": "sources.<id>",
               "sources.s.driver_params": "sources.<id>.driver_params",
               "senders.f": "senders.<id>", "senders.f.credential": "senders.<id>.credential",
               "pipes.p": "pipes.<id>"}


def known_keys(base: dict[str, Any], node: str, load: Any, tmp_path: Path) -> list[str]:
    """The keys the loader accepts at `node`, from the 'unknown key' error it gives."""
    data = copy.deepcopy(base)
    target = data
    for part in filter(None, node.split(".")):
        target = target[part]
    target["zz_not_a_key"] = 1
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load(str(p))
    m = re.search(r"unknown key 'zz_not_a_key' \(known: (.*)\)", info.value.reason)
    assert m, info.value.reason
    return m.group(1).split(", ")


@pytest.mark.parametrize(("base", "nodes", "load"), [
    (FUSION, FUSION_NODES, load_fusion_config), (AGENT, AGENT_NODES, load_agent_config),
], ids=["fusion", "agent"])
def test_readme_documents_every_config_key(
    tmp_path: Path, base: dict[str, Any], nodes: dict[str, str], load: Any
) -> None:
    missing = []
    for node, shown in nodes.items():
        for key in known_keys(base, node, load, tmp_path):
            path = f"{shown}.{key}" if shown else key
            # a section or mapping is documented through its own keys' rows
            if f"| `{path}` |" not in README and f"| `{path}." not in README:
                missing.append(path)
    assert not missing, f"keys missing from the README's reference tables: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test     # the test suite" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in ci
    assert re.search(r"^exec make test\b", ci, re.M)
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert ".venv/bin/pytest -q" in dry.stdout
