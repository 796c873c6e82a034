"""``POST /authorized``: who the configured authentication module says the caller is.

The upstream's endpoint: authentication only (no action), ``{user_id, username,
skip_userid_check}``; the caller's token is never echoed.
"""

from __future__ import annotations

from aiohttp import web

from lightspeed.api.common import authenticate
from lightspeed.api.errors import json_response
from lightspeed.api.openapi import Response, operation
from lightspeed.auth.routes import authenticated_only

__all__ = ["add_routes"]


_AUTHORIZED_SCHEMA = {
    "type": "object",
    "properties": {
        "user_id": {"type": "string"},
        "username": {"type": "string"},
        "skip_userid_check": {"type": "boolean"},
    },
    "required": ["user_id", "username", "skip_userid_check"],
    "additionalProperties": False,
}


@authenticated_only
@operation(
    summary="Who the configured authentication module says the caller is",
    tags=["authorization"],
    responses={200: Response(description="The caller", content={"application/json": _AUTHORIZED_SCHEMA})},
    errors=[400, 401, 403, 500, 503],
)
async def authorized(request: web.Request) -> web.Response:
    user = await authenticate(request)
    return json_response(
        {"user_id": user.user_id, "username": user.username, "skip_userid_check": user.skip_userid_check}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/authorized", authorized)
