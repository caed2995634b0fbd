"""`python -m fustor_fusion` = `fustor-fusion`."""

from __future__ import annotations

import sys

from fustor_fusion.cli import main

sys.exit(main())
