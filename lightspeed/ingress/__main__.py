"""``python -m lightspeed.ingress``: the local ingress emulator."""

from lightspeed.ingress import main

raise SystemExit(main())
