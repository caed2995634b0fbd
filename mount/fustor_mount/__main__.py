"""`python -m fustor_mount MOUNTPOINT ...` (same as the fustor-mount command)."""

from __future__ import annotations

import sys

from fustor_mount.cli import main

sys.exit(main())
