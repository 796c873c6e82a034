"""``python -m lightspeed``: the same as the ``lightspeed`` command."""

from lightspeed.cli import main

raise SystemExit(main())
