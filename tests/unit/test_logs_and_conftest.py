"""fustor.logs (stderr or a rotating file, one handler at a time) and the `--long` option of
tests/conftest.py."""

from __future__ import annotations

import logging
import logging.handlers
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fustor import logs

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    if logs._installed is not None:
        root.removeHandler(logs._installed)
        logs._installed.close()
        logs._installed = None
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in logs.CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_file_logging_rotates_and_replaces_its_handler(
    tmp_path: Path, restore_root_logger: None
) -> None:
    log_file = tmp_path / "logs" / "fusion.log"
    logs.setup_logging("debug", file=log_file)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert len(ours) == 1 and ours[0].maxBytes == logs.MAX_BYTES
    assert root.level == logging.DEBUG
    logging.getLogger("fustor.test").debug("hello %s", "file")
    ours[0].flush()
    assert "DEBUG   fustor.test: hello file" in log_file.read_text()

    logs.setup_logging("WARNING")  # back to stderr: the file handler is replaced, not stacked
    assert not any(isinstance(h, logging.handlers.RotatingFileHandler) for h in root.handlers)
    assert sum(1 for h in root.handlers if h is logs._installed) == 1
    assert root.level == logging.WARNING
    logs.set_level("info")
    assert root.level == logging.INFO


def test_request_logs_of_http_libraries_only_at_debug(restore_root_logger: None) -> None:
    logs.setup_logging("INFO")
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    assert logging.getLogger("fustor.agent").isEnabledFor(logging.INFO)
    logs.set_level("DEBUG")  # a reload to DEBUG shows them again
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)


def test_long_option_enables_long_tests(tmp_path: Path) -> None:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n@pytest.mark.long\ndef test_long():\n    pass\n\n"
        "def test_short():\n    pass\n"
    )
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
            "markers=long: long", "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "1 passed, 1 skipped" in r.stdout, r.stdout
    r = subprocess.run([*base, "--long"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "2 passed" in r.stdout, r.stdout
