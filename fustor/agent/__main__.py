"""`python -m fustor.agent` is `fustor-agent`."""

from fustor.agent.cli import main

raise SystemExit(main())
