"""The smallest program that serves lightspeed: load a configuration, build the app, run it.

    python examples/minimal_server.py [lightspeed-stack.yaml]

Without an argument the embedded defaults apply (feedback and transcripts under ./data).
``lightspeed serve`` does the same, plus ``--host/--port``, workers and friendly errors.
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from lightspeed import create_app, load_config


def main() -> None:
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else None)
    logging.basicConfig(level=config.service.log_level.upper())
    app = create_app(config)  # fully wired, not started
    web.run_app(app, host=config.service.host, port=config.service.port)  # stops cleanly on SIGINT/SIGTERM


if __name__ == "__main__":
    main()
