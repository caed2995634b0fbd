"""Project-wide pytest set-up: `--long` enables the long-form tests (`@pytest.mark.long`),
which the default run (`make test`) skips."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long", action="store_true", default=False,
        help="also run the long-form tests marked @pytest.mark.long",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long-form test: run with --long (make test-long)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
