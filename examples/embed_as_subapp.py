"""Mount lightspeed inside another aiohttp application, under ``/lightspeed``.

    python examples/embed_as_subapp.py [lightspeed-stack.yaml]

The host keeps its own routes and middlewares; lightspeed's routes, error bodies,
storage and HTTP client session live in the sub-application and are opened and closed
with the host (its cleanup contexts run as part of the host's).
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from lightspeed import Config, create_app, load_config


async def index(request: web.Request) -> web.Response:
    return web.json_response({"service": "host", "lightspeed": "/lightspeed/v1/feedback"})


def build(config: Config) -> web.Application:
    """The host application with lightspeed mounted under ``/lightspeed``."""
    host = web.Application()
    host.router.add_get("/", index)
    host.add_subapp("/lightspeed", create_app(config))
    return host


def main() -> None:
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else None)
    logging.basicConfig(level=config.service.log_level.upper())
    web.run_app(build(config), host=config.service.host, port=config.service.port)


if __name__ == "__main__":
    main()
