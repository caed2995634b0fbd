"""Logging set-up for the Fustor processes: one handler on the root logger, either stderr
(foreground, systemd's journal) or a size-rotated file (detached daemons)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MAX_BYTES = 20 * 1024 * 1024
BACKUPS = 5

# Libraries that log every request at INFO (an agent's heartbeats and batches, the mount's
# lookups): only their warnings, unless the level is DEBUG.
CHATTY = ("httpx", "httpcore", "hpack")

# The handler we installed last, so a second call (reload, tests) replaces it instead of
# stacking another one and logging every line twice.
_installed: logging.Handler | None = None


def setup_logging(level: str = "INFO", *, file: str | Path | None = None) -> None:
    """Send log records of `level` and above to stderr, or to the rotating `file`."""
    global _installed
    handler: logging.Handler
    if file is not None:
        path = Path(file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    root.addHandler(handler)
    _installed = handler
    set_level(level)


def set_level(level: str) -> None:
    """Change the level without touching the handler (used on reload)."""
    level = level.upper()
    logging.getLogger().setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
